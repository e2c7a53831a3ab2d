"""Training records from synthesized pairs: chat examples with varied instruction phrasings, a share of general
instruction data against forgetting, and text records (chunks + teacher paraphrases) for continued pre-training."""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strata.errors import StrataError
from strata.files import read_jsonl
from strata.settings import Settings

GENERAL = "general/mix"  # presets/general/mix.yaml: general questions with answers, mixed into chat training
GENERAL_TOPIC = "general"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class GeneralMix:
    """presets/general/mix.yaml: general instruction pairs (not about any document)."""

    pairs: list[dict]
    name: str = ""
    description: str = ""


def _pick(options: list[str], key: str) -> str:
    return options[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(options)]


def chat_record(pair: dict[str, Any], phrasings: list[str]) -> dict[str, Any]:
    """A pair as a one-turn chat record; the instruction is one of `phrasings` (chosen by the pair's id)."""
    template = _pick(phrasings, pair.get("id", pair["question"])) if phrasings else "{question}"
    try:
        prompt = template.format(question=pair["question"], section=pair.get("section") or "the document")
    except (KeyError, IndexError) as exc:
        raise StrataError(f"preset phrasing {template!r} uses an unknown field {exc}; use {{question}} and "
                          "{section}") from None
    return {"id": pair.get("id"), "topic": pair.get("topic"), "chunk_id": pair.get("chunk_id"),
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": pair["answer"]}]}


def general_records(count: int, phrasings: list[str]) -> list[dict[str, Any]]:
    """`count` general chat records, cycling through the preset mix in order."""
    if count <= 0:
        return []
    from strata.presets import load_preset

    mix = load_preset(GeneralMix, GENERAL).pairs
    if not mix:
        raise StrataError("presets/general/mix.yaml lists no pairs; add some or set general_share: 0")
    rows = []
    for index in range(count):
        item = mix[index % len(mix)]
        rows.append(chat_record({"id": f"general-{index}", "question": item["question"], "answer": item["answer"],
                                 "topic": GENERAL_TOPIC}, phrasings[:1]))
    return rows


def _filter(rows: list[dict[str, Any]], topics: list[str] | None) -> list[dict[str, Any]]:
    return rows if topics is None else [r for r in rows if r.get("topic") in set(topics)]


def has_pairs(settings: Settings) -> bool:
    return settings.pairs_train_jsonl.is_file()


def chat_data(settings: Settings, topics: list[str] | None, phrasings: list[str], general_share: float,
              with_chunks: bool = False, permutations: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, val) chat records from pairs_train / pairs_val, with round(general_share x train) general records
    mixed into train (tagged topic `general`, so a per-topic run keeps them with every topic); `with_chunks` adds
    chunk_records (chunks carry their chat form; paraphrases are plain text) and `permutations` sentence-shuffled
    copies of each chunk (plain text) to train."""
    hint = "run `strata build synthesize` first (it writes data/processed/pairs_train.jsonl)"
    pairs = _filter(read_jsonl(settings.pairs_train_jsonl, hint), topics)
    if not pairs:
        raise StrataError(f"{settings.pairs_train_jsonl} has no pairs for topics {topics}; check --topics against "
                          "synthesis_summary.json")
    train = [chat_record(p, phrasings) for p in pairs]
    val_pairs = read_jsonl(settings.pairs_val_jsonl, hint) if settings.pairs_val_jsonl.is_file() else []
    val = [chat_record(p, phrasings[:1]) for p in _filter(val_pairs, topics)]
    text = chunk_records(settings, topics) if with_chunks else []
    text += permuted([r for r in text if not r.get("paraphrase_of")], permutations)  # chunks, not paraphrases
    return train + general_records(math.ceil(general_share * len(train)), phrasings) + text, val


def chunk_records(settings: Settings, topics: list[str] | None) -> list[dict[str, Any]]:
    """Every chunk of `topics` (train.jsonl and val.jsonl: with pairs, no section is held out) plus the teacher's
    paraphrases."""
    hint = "run `strata build dataset` first"
    chunks = read_jsonl(settings.train_jsonl, hint)
    for extra in (settings.val_jsonl, settings.paraphrases_jsonl):
        if Path(extra).is_file():
            chunks += read_jsonl(extra, hint)
    return _filter([r for r in chunks if r.get("text")], topics)


def permuted(chunks: list[dict[str, Any]], copies: int) -> list[dict[str, Any]]:
    """`copies` plain text rows per chunk, each its sentences in another order (seeded by the chunk id, so a rerun
    trains on the same rows); a chunk of one sentence has no other order and adds none."""
    rows = []
    for chunk in chunks:
        sentences = SENTENCE_END.split(" ".join(chunk["text"].split()))
        if len(sentences) < 2:
            continue
        rng = random.Random(f"{chunk.get('id')}")
        for copy in range(copies):
            order = sentences[:]
            rng.shuffle(order)
            rows.append({"id": f"{chunk.get('id')}-permuted-{copy}", "topic": chunk.get("topic"),
                         "chunk_id": chunk.get("id"), "text": " ".join(order)})
    return rows


def text_data(settings: Settings, topics: list[str] | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, val) text records: chunk_records; val is the held-out pairs as question + answer text."""
    hint = "run `strata build dataset` first"
    train = chunk_records(settings, topics)
    val_pairs = read_jsonl(settings.pairs_val_jsonl, hint) if settings.pairs_val_jsonl.is_file() else []
    val = [{"id": p["id"], "topic": p["topic"], "text": f"{p['question']}\n{p['answer']}"}
           for p in _filter(val_pairs, topics)]
    return train, val
