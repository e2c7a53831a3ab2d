"""Token-aware, heading-aware chunking with overlap, plus exact and near-duplicate (shingled MinHash) chunk removal."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable, Iterable

from strata.data.pdftext import Section

Counter = Callable[[str], int]
SENTENCE = re.compile(r"(?<=[.!?;])\s+(?=[\"'(\[A-Z0-9])")


@dataclass
class Chunk:
    heading: str
    text: str
    pages: list[int]
    n_tokens: int


@dataclass(frozen=True)
class _Unit:
    text: str
    paragraph: int
    pages: tuple[int, ...]
    tokens: int


def _split_words(text: str, limit: int, count: Counter) -> list[str]:
    """Split an over-long sentence at word boundaries into pieces of at most `limit` tokens."""
    words, pieces = text.split(), []
    while words:
        lo, hi = 1, len(words)
        while lo < hi:  # the longest prefix that fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if count(" ".join(words[:mid])) <= limit else (lo, mid - 1)
        pieces.append(" ".join(words[:lo]))
        words = words[lo:]
    return pieces


def _units(section: Section, limit: int, count: Counter) -> list[_Unit]:
    units = []
    for index, paragraph in enumerate(section.paragraphs):
        for sentence in SENTENCE.split(paragraph.text):
            n = count(sentence)
            pieces = [sentence] if n <= limit else _split_words(sentence, limit, count)
            units += [_Unit(p, index, tuple(paragraph.pages), n if len(pieces) == 1 else count(p)) for p in pieces]
    return units


def _join(units: Iterable[_Unit]) -> str:
    text, last = "", None
    for unit in units:
        text += ("" if last is None else " " if unit.paragraph == last else "\n\n") + unit.text
        last = unit.paragraph
    return text


def chunk_section(section: Section, count: Counter, target: int, overlap: int, max_tokens: int,
                  min_tokens: int = 0) -> list[Chunk]:
    """Pack a section's sentences into chunks of <= target tokens (measured on the joined text). Each new chunk
    starts with up to `overlap` tokens from the end of the previous one (whole sentences, else its last words).
    A tail under `min_tokens` is folded into the chunk before it if that stays <= max_tokens. Chunks never
    cross the section."""
    units = _units(section, target, count)
    groups: list[tuple[list[_Unit], int]] = []  # (units, how many of them were carried over as overlap)
    done, carry = 0, []
    while done < len(units):
        end = _pack(carry + units[done:], target, count)
        if end <= len(carry):  # the overlap left no room for a new sentence: start this chunk without it
            carry, end = [], _pack(units[done:], target, count)
        group = (carry + units[done:])[:end]
        groups.append((group, len(carry)))
        done += end - len(carry)
        carry = _tail(group, overlap, count)
    if len(groups) > 1 and sum(u.tokens for u in groups[-1][0][groups[-1][1]:]) < min_tokens:
        merged = groups[-2][0] + groups[-1][0][groups[-1][1]:]
        if count(_join(merged)) <= max_tokens:
            groups[-2:] = [(merged, groups[-2][1])]
    chunks = []
    for group, _ in groups:
        text = _join(group)
        chunks.append(Chunk(section.heading, text, sorted({p for u in group for p in u.pages}), count(text)))
    return chunks


def _pack(units: list[_Unit], target: int, count: Counter) -> int:
    """Length of the longest prefix of `units` whose joined text is <= target tokens (at least one unit)."""
    end = 1
    while end < len(units) and sum(u.tokens for u in units[:end + 1]) <= target:
        end += 1
    while end > 1 and count(_join(units[:end])) > target:
        end -= 1  # joined text can tokenize longer than the sum of its parts
    return end


def _tail(group: list[_Unit], overlap: int, count: Counter) -> list[_Unit]:
    """The end of a chunk to repeat at the start of the next: whole trailing sentences within `overlap` tokens,
    else the last words of the final sentence."""
    start, carried = len(group), 0
    while start > 1 and carried + group[start - 1].tokens <= overlap:
        start -= 1
        carried += group[start].tokens
    if start < len(group) or overlap <= 0:
        return group[start:]
    last = group[-1]
    words = last.text.split()
    keep = 0
    while keep < len(words) - 1 and count(" ".join(words[-(keep + 1):])) <= overlap:
        keep += 1
    return [_Unit(" ".join(words[-keep:]), last.paragraph, last.pages, count(" ".join(words[-keep:])))] if keep else []


def _shingles(text: str, size: int) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i:i + size]) for i in range(max(1, len(words) - size + 1))}


def _minhash(shingles: set[str], n_hashes: int) -> list[int]:
    hashes = [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big") for s in shingles]
    return [min((h ^ (seed * 0x9E3779B97F4A7C15)) & 0xFFFFFFFFFFFFFFFF for h in hashes) for seed in range(1, n_hashes + 1)]


def dedup(texts: list[str], threshold: float = 0.8, shingle: int = 5, bands: int = 16,
          rows: int = 4) -> tuple[list[int], dict[str, int]]:
    """Indices of the texts to keep, in order: the first of exact duplicates (whitespace/case-insensitive)
    and of near-duplicates (word-shingle Jaccard >= threshold; MinHash LSH picks candidates) wins."""
    keep: list[int] = []
    exact: set[str] = set()
    buckets: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    sets: dict[int, set[str]] = {}
    dropped = {"exact": 0, "near": 0}
    for index, text in enumerate(texts):
        normal = " ".join(text.lower().split())
        digest = hashlib.sha256(normal.encode()).hexdigest()
        if digest in exact:
            dropped["exact"] += 1
            continue
        shingles = _shingles(text, shingle)
        signature = _minhash(shingles, bands * rows)
        keys = [(b, tuple(signature[b * rows:(b + 1) * rows])) for b in range(bands)]
        candidates = {j for key in keys for j in buckets.get(key, [])}
        if any(len(shingles & sets[j]) / len(shingles | sets[j]) >= threshold for j in candidates):
            dropped["near"] += 1
            continue
        exact.add(digest)
        sets[index] = shingles
        for key in keys:
            buckets.setdefault(key, []).append(index)
        keep.append(index)
    return keep, dropped
