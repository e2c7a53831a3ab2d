"""`strata build synthesize`: every chunk -> several cited question/answer pairs (extractive or an LLM teacher),
filtered (supported by the chunk, no near-duplicate questions, sane lengths), split into pairs_train / pairs_val."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Literal

from strata.data.extractive import UNANSWERABLE, Draft, content_words, generate
from strata.errors import StrataError
from strata.files import atomic_write_json, atomic_write_jsonl, now_iso, read_jsonl
from strata.presets import load_preset
from strata.settings import Settings

TYPES = ("definition", "summary", "rule", "scenario", "comparison", "threshold", "list", "unanswerable")


@dataclass(frozen=True)
class SynthesisPreset:
    """Knobs of `strata build synthesize` (presets/synthesis.yaml holds what differs)."""

    generator: Literal["auto", "extractive", "llm"] = "auto"  # auto: llm when a teacher URL is set, else extractive
    per_type: int = 2  # extractive: pairs per question type per chunk
    unanswerable_share: float = 0.25  # share of chunks that also get a question they cannot answer
    min_support: float = 0.6  # share of an answer's content words that must occur in its chunk
    near_duplicate: float = 0.8  # content-word Jaccard at or above which two questions of a topic are one
    min_answer_words: int = 4
    max_answer_words: int = 90
    min_question_words: int = 4
    max_pairs_per_chunk: int = 8
    val_fraction: float = 0.15  # share of each topic's pairs held out (pairs, not sections: every section trains)
    teacher_pairs: int = 6  # pairs the teacher is asked for per chunk
    teacher_max_tokens: int = 1024
    teacher_temperature: float = 0.0
    teacher_concurrency: int = 4  # requests in flight (the in-process engine's slots)
    teacher_timeout_s: float = 600.0


@dataclass(frozen=True)
class Teacher:
    """Where llm pairs come from: an OpenAI-compatible base URL and model name (url None: strata's own engine
    serving `gguf`, the base model as GGUF, in-process)."""

    url: str | None = None
    model: str | None = None
    gguf: str | None = None
    api_key_env: str = "STRATA_TEACHER_API_KEY"

    @property
    def identity(self) -> str:
        return f"{self.url or 'strata-in-process'}|{self.model or ''}|{self.gguf or ''}"


def teacher_from(options: dict[str, Any]) -> Teacher:
    """A Teacher from {teacher_url, teacher_model}: with a URL the model is a name, without one a local GGUF path."""
    url, model = options.get("teacher_url"), options.get("teacher_model")
    return Teacher(url=url, model=model if url else None, gguf=None if url else model)


def chunks_of(settings: Settings) -> list[dict[str, Any]]:
    """Every chunk the dataset kept (train and val records alike: held-out sets are pairs now), in file order."""
    hint = "run `strata build dataset` first (it writes data/processed/train.jsonl and val.jsonl)"
    records = read_jsonl(settings.train_jsonl, hint)
    if settings.val_jsonl.is_file():
        records += read_jsonl(settings.val_jsonl, hint)
    chunks = [r for r in records if isinstance(r.get("text"), str) and r.get("id")]
    if not chunks:
        raise StrataError(f"{settings.train_jsonl} holds no chunk text; the dataset preset must keep the `text` format "
                          "(formats: [text, chat]). Rebuild with `strata build dataset`.")
    return chunks


def previous_texts(chunks: list[dict[str, Any]]) -> list[str | None]:
    """For each chunk, the text of the chunk before it in the same section (None for a section's first)."""
    last: dict[tuple[str, str], str] = {}
    out: list[str | None] = []
    for chunk in chunks:
        key = (chunk.get("source", ""), chunk.get("heading", ""))
        out.append(last.get(key))
        last[key] = chunk["text"]
    return out


def _share(key: str) -> float:
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / 16 ** 12


def check_draft(draft: Draft, chunk: dict[str, Any], preset: SynthesisPreset) -> str | None:
    """Why a draft is rejected (a reason name), or None to keep it."""
    if draft.type not in TYPES:
        return "unknown_type"
    if len(draft.question.split()) < preset.min_question_words:
        return "question_too_short"
    words = len(draft.answer.split())
    if draft.type != "unanswerable":
        if words < preset.min_answer_words:
            return "answer_too_short"
        if words > preset.max_answer_words:
            return "answer_too_long"
        answer = content_words(draft.answer)
        present = set(content_words(chunk["text"]))
        if not answer or sum(w in present for w in answer) / len(answer) < preset.min_support:
            return "unsupported_answer"
    return None


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def select(chunk: dict[str, Any], drafts: Iterable[Draft], kept_questions: list[set[str]], preset: SynthesisPreset,
           rejected: Counter, generator: str) -> list[dict[str, Any]]:
    """The drafts of one chunk that pass every filter, as pair rows; `kept_questions` (the topic's so far) grows."""
    rows = []
    for draft in drafts:
        if draft.type == "unanswerable":
            draft = Draft(draft.question, UNANSWERABLE, draft.type)
        reason = check_draft(draft, chunk, preset)
        words = set(content_words(draft.question))
        if reason is None and any(_jaccard(words, seen) >= preset.near_duplicate for seen in kept_questions):
            reason = "duplicate_question"
        if reason is None and len(rows) >= preset.max_pairs_per_chunk:
            reason = "chunk_cap"
        if reason:
            rejected[reason] += 1
            continue
        kept_questions.append(words)
        uid = hashlib.sha256(f"{chunk['id']}\x00{draft.question}".encode()).hexdigest()[:16]
        rows.append({"id": f"{chunk['topic']}-q{uid}", "question": draft.question, "answer": draft.answer,
                     "type": draft.type, "chunk_id": chunk["id"], "topic": chunk["topic"],
                     "section": chunk.get("heading") or chunk["topic"], "source": chunk.get("source"),
                     "pages": chunk.get("pages") or [], "generator": generator})
    return rows


def split(pairs: list[dict[str, Any]], fraction: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, val): per topic, the pairs whose id hashes lowest up to `fraction` (>= 1 when a topic has >= 2
    answerable pairs), never a section's last training pair, so every section trains. Unanswerable pairs always
    train: they teach the refusal, and a held-out one measures nothing."""
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for pair in pairs:
        if pair["type"] != "unanswerable":
            by_topic[pair["topic"]].append(pair)
    held: set[str] = set()
    left = Counter((p["source"], p["section"]) for p in pairs)  # training pairs each section still has
    for mine in by_topic.values():
        if len(mine) < 2 or fraction <= 0:
            continue
        count = min(len(mine) - 1, max(1, round(fraction * len(mine))))
        for pair in sorted(mine, key=lambda p: _share(p["id"])):
            if len(held & {p["id"] for p in mine}) >= count:
                break
            if left[(pair["source"], pair["section"])] > 1:
                held.add(pair["id"])
                left[(pair["source"], pair["section"])] -= 1
    return [p for p in pairs if p["id"] not in held], [p for p in pairs if p["id"] in held]


def synthesize(settings: Settings, *, preset: str = "synthesis", generator: str | None = None,
               teacher: Teacher | None = None, progress: bool = True, limit: int | None = None,
               echo: Any = print) -> dict[str, Any]:
    """Write pairs_train.jsonl, pairs_val.jsonl (+ paraphrases.jsonl from a teacher) and synthesis_summary.json;
    return the summary. `limit` caps the chunks (a quick look)."""
    knobs = load_preset(SynthesisPreset, preset)
    if not 0 <= knobs.val_fraction < 1 or not 0 <= knobs.min_support <= 1:
        raise StrataError(f"synthesis preset: val_fraction must be in [0, 1) and min_support in [0, 1], got "
                          f"{knobs.val_fraction}, {knobs.min_support}")
    teacher = teacher or Teacher()
    kind = generator or knobs.generator
    if kind == "auto":
        kind = "llm" if teacher.url else "extractive"
    if kind not in ("extractive", "llm"):
        raise StrataError(f"--generator must be extractive, llm or auto, got {kind!r}")
    chunks = chunks_of(settings)[:limit]
    previous = previous_texts(chunks)
    if kind == "llm":
        from strata.data.teacher import teacher_drafts

        drafted, paraphrases, stats = teacher_drafts(settings, chunks, teacher, knobs, progress, echo)
    else:
        drafted = [generate(c, p, knobs.per_type, _share(f"probe:{c['id']}") < knobs.unanswerable_share)
                   for c, p in zip(chunks, previous)]
        paraphrases, stats = [], {"requested": 0, "cached": 0, "seconds": None}
    rejected: Counter = Counter(stats.pop("rejected", {}))
    seen: dict[str, list[set[str]]] = defaultdict(list)
    pairs: list[dict[str, Any]] = []
    from tqdm import tqdm

    with tqdm(total=len(chunks), desc="synthesize", unit="chunk", disable=not progress or None) as bar:
        for chunk, drafts in zip(chunks, drafted):
            pairs += select(chunk, drafts, seen[chunk["topic"]], knobs, rejected, kind)
            bar.update(1)
            bar.set_postfix(pairs=len(pairs))
    if not pairs:
        raise StrataError(f"synthesis kept no pairs from {len(chunks)} chunks (rejected: {dict(rejected)}); check the "
                          "teacher's replies or loosen presets/synthesis.yaml.")
    train, val = split(pairs, knobs.val_fraction)
    atomic_write_jsonl(settings.pairs_train_jsonl, train)
    atomic_write_jsonl(settings.pairs_val_jsonl, val)
    if paraphrases:
        atomic_write_jsonl(settings.paraphrases_jsonl, paraphrases)
    else:
        settings.paraphrases_jsonl.unlink(missing_ok=True)  # an older teacher's paraphrases are not this run's
    summary = _summary(chunks, train, val, rejected, kind, teacher if kind == "llm" else None, knobs, stats,
                       len(paraphrases))
    atomic_write_json(settings.synthesis_summary, summary)
    return summary


def _summary(chunks: list[dict], train: list[dict], val: list[dict], rejected: Counter, kind: str,
             teacher: Teacher | None, preset: SynthesisPreset, stats: dict[str, Any], paraphrases: int) -> dict:
    topics: dict[str, dict[str, int]] = {}
    for split_name, rows in (("train", train), ("val", val)):
        for row in rows:
            topics.setdefault(row["topic"], {"train": 0, "val": 0})[split_name] += 1
    per_chunk = Counter(row["chunk_id"] for row in train + val)
    seconds = stats.get("seconds")
    return {"generator": kind, "teacher": asdict(teacher) if teacher else None, "chunks": len(chunks),
            "chunks_with_pairs": len(per_chunk), "pairs": len(train) + len(val), "train": len(train), "val": len(val),
            "per_topic": topics, "per_type": dict(Counter(r["type"] for r in train + val)),
            "rejected": dict(rejected), "paraphrases": paraphrases,
            "requests": {k: v for k, v in stats.items() if k != "seconds"}, "seconds": seconds,
            "pairs_per_s": (len(train) + len(val)) / seconds if seconds else None,
            "preset": asdict(preset), "created": now_iso()}
