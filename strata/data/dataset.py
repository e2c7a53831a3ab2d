"""`build_dataset`: clean, chunk, dedup and split the pretest's recommended PDFs into train.jsonl / val.jsonl."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from strata.data.chunking import Chunk, chunk_section, dedup
from strata.data.pdftext import sections_from_pdf
from strata.errors import StrataError
from strata.files import atomic_write_json, atomic_write_jsonl, now_iso, read_json, sha256_file
from strata.modelfolder import resolve_base_model
from strata.presets import load_preset
from strata.settings import Settings

PRETEST_HINT = "run `strata build pdf-pretest` first"


@dataclass(frozen=True)
class DatasetPreset:
    """Chunking, dedup, split and output-format knobs for `strata build dataset`."""

    target_tokens: int = 256  # chunks are packed up to this many tokens (the base model's tokenizer)
    overlap_tokens: int = 32  # each chunk starts with up to this many tokens from the end of the previous one
    max_tokens: int = 320  # hard cap; only reached when a short section tail is folded into the chunk before it
    min_tokens: int = 24  # a section tail shorter than this is folded into the previous chunk
    repeat_share: float = 0.5  # a margin line on at least this share of pages is a running header/footer
    near_dup_threshold: float = 0.8  # word 5-gram Jaccard at or above which a chunk is a near duplicate
    val_fraction: float = 0.15  # share of sections (not chunks) held out for validation
    formats: list[Literal["text", "chat"]] = field(default_factory=lambda: ["text", "chat"])
    prompt: str = "Explain {heading} ({topic})."


def load_tokenizer(settings: Settings, tokenizer_dir: str | Path | None = None) -> Any:
    """The tokenizer of `tokenizer_dir`, else of the base as training resolves it (a hub id: its models/<name>,
    placed by hand or fetched once); a clear error when it is not there."""
    hint = ("chunks are measured in the base model's tokens. Set BASE_MODEL or pass --base-model to a local HF model "
            "dir, or run `strata kit tiny-base`.")
    try:
        source = Path(tokenizer_dir) if tokenizer_dir is not None else resolve_base_model(settings)
    except StrataError as exc:
        raise StrataError(f"cannot load the base model's tokenizer: {exc} ({hint})") from None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise StrataError(f"cannot load a tokenizer from {source} ({type(exc).__name__}): {hint}") from None


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def recommended_sources(settings: Settings) -> list[dict[str, str]]:
    """The pretest's recommended PDFs as {path, topic, sha256}, each checked to be unchanged on disk."""
    report = read_json(settings.pretest_json, PRETEST_HINT)
    sources = [{k: d[k] for k in ("path", "topic", "sha256")} for d in report.get("documents", []) if d.get("recommended")]
    if not sources:
        raise StrataError(f"the pretest ({settings.pretest_json}) recommends no PDFs: see its reasons, fix or add PDFs "
                          "under data/raw_pdfs/<topic>/, then run `strata build pdf-pretest` again")
    for source in sources:
        path = settings.raw_pdfs / source["path"]
        if not path.is_file() or sha256_file(path) != source["sha256"]:
            state = "is missing" if not path.is_file() else "changed since the pretest"
            raise StrataError(f"{path} {state}: run `strata build pdf-pretest` again before building the dataset")
    return sources


def _val_sections(keys: list[tuple[str, str, str]], fraction: float) -> set[tuple[str, str]]:
    """(source, heading) pairs held out: a hash below `fraction`; every topic with >1 section gets >= 1 val and
    >= 1 train section. Deterministic, independent of chunking."""
    def rank(source: str, heading: str) -> float:
        return int(hashlib.sha256(f"{source}\x00{heading}".encode()).hexdigest()[:12], 16) / 16 ** 12

    by_topic: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    for topic, source, heading in dict.fromkeys(keys):
        by_topic[topic].append((rank(source, heading), source, heading))
    held = set()
    for ranked in by_topic.values():
        ranked.sort()
        if len(ranked) < 2:
            continue
        count = min(len(ranked) - 1, max(1, sum(r < fraction for r, _, _ in ranked)))
        held |= {(source, heading) for _, source, heading in ranked[:count]}
    return held


def _record(chunk: Chunk, source: dict[str, str], preset: DatasetPreset) -> dict[str, Any]:
    topic, heading = source["topic"], chunk.heading or Path(source["path"]).stem
    uid = hashlib.sha256(f"{source['path']}\x00{heading}\x00{chunk.text}".encode()).hexdigest()[:16]
    record: dict[str, Any] = {"id": f"{topic}-{uid}", "text": chunk.text, "topic": topic, "source": source["path"],
                              "pages": chunk.pages, "heading": heading, "n_tokens": chunk.n_tokens}
    if "text" not in preset.formats:
        del record["text"]
    if "chat" in preset.formats:
        prompt = preset.prompt.format(heading=heading, topic=topic)
        record["messages"] = [{"role": "user", "content": prompt}, {"role": "assistant", "content": chunk.text}]
    return record


def _check(preset: DatasetPreset) -> None:
    if not preset.formats:
        raise StrataError("dataset preset: formats must list at least one of 'text', 'chat'")
    if not 0 <= preset.overlap_tokens < preset.target_tokens <= preset.max_tokens:
        raise StrataError("dataset preset: need 0 <= overlap_tokens < target_tokens <= max_tokens, got "
                          f"{preset.overlap_tokens}, {preset.target_tokens}, {preset.max_tokens}")


def build_dataset(settings: Settings, preset: str = "dataset", tokenizer_dir: str | Path | None = None) -> dict[str, Any]:
    """Chunk the recommended PDFs into settings.train_jsonl / val_jsonl (+ dataset_summary.json); return the summary."""
    from tqdm import tqdm

    knobs = load_preset(DatasetPreset, preset)
    _check(knobs)
    refuse_user_files(settings)
    sources = recommended_sources(settings)
    count = token_counter(load_tokenizer(settings, tokenizer_dir))
    chunks: list[tuple[dict[str, str], Chunk]] = []
    for source in tqdm(sources, desc="dataset", unit="pdf", disable=None):
        for section in sections_from_pdf(settings.raw_pdfs / source["path"], knobs.repeat_share):
            for chunk in chunk_section(section, count, knobs.target_tokens, knobs.overlap_tokens,
                                       knobs.max_tokens, knobs.min_tokens):
                chunks.append((source, chunk))
    keep, dropped = dedup([c.text for _, c in chunks], knobs.near_dup_threshold)
    chunks = [chunks[i] for i in keep]
    held = _val_sections([(s["topic"], s["path"], c.heading) for s, c in chunks], knobs.val_fraction)
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    for source, chunk in chunks:
        splits["val" if (source["path"], chunk.heading) in held else "train"].append(_record(chunk, source, knobs))
    atomic_write_jsonl(settings.train_jsonl, splits["train"])
    atomic_write_jsonl(settings.val_jsonl, splits["val"])
    summary = _summary(sources, splits, dropped, knobs)
    summary["written"] = {p.name: sha256_file(p) for p in (settings.train_jsonl, settings.val_jsonl)}
    atomic_write_json(settings.processed / "dataset_summary.json", summary)
    return summary


def refuse_user_files(settings: Settings) -> None:
    """train.jsonl / val.jsonl that this step did not write (no summary, or edited since) are the user's: never
    overwrite them. A summary from before strata recorded its hashes counts as strata's."""
    path = settings.processed / "dataset_summary.json"
    written = read_json(path, "").get("written") if path.is_file() else {}
    for file in (settings.train_jsonl, settings.val_jsonl):
        if written is not None and file.is_file() and written.get(file.name) != sha256_file(file):
            raise StrataError(f"{file} was not written by `strata build dataset` (or was edited since), and strata "
                              f"never overwrites user files: move it (e.g. to {settings.workspace / 'data' / 'user'}) and "
                              "train on it with --train-files, or delete it to let the dataset step rebuild it.")


def _summary(sources: list[dict[str, str]], splits: dict[str, list[dict[str, Any]]], dropped: dict[str, int],
             preset: DatasetPreset) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {s["topic"]: {"train": 0, "val": 0} for s in sources}
    tokens: dict[str, dict[str, int]] = {s["topic"]: {"train": 0, "val": 0} for s in sources}
    for split, records in splits.items():
        for record in records:
            counts[record["topic"]][split] += 1
            tokens[record["topic"]][split] += record["n_tokens"]
    return {"sources": sources, "counts": counts, "tokens": tokens, "dropped_duplicates": dropped,
            "preset": asdict(preset), "created": now_iso()}
