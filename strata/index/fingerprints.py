"""What a server expects an index to match (dataset and base), read from the workspace or a release, and the
start-up check that refuses a mismatched index with both fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

from strata.errors import StrataError
from strata.index.records import Meta, dataset_fingerprint
from strata.settings import Settings

MERGE_RECORD = "merge_record.json"


def recorded_base(settings: Settings) -> str | None:
    """The base fingerprint peft/merged/merge_record.json recorded (what MODEL_PATH was built from), or None."""
    try:
        record = json.loads((settings.merged / MERGE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get("base_fingerprint") if isinstance(record, dict) else None


def workspace_dataset(settings: Settings) -> str | None:
    """The dataset fingerprint of the workspace's train.jsonl + val.jsonl, or None when there is no dataset."""
    if settings.train_jsonl.is_file() and settings.val_jsonl.is_file():
        return dataset_fingerprint(settings.train_jsonl, settings.val_jsonl)
    return None


def check_meta(meta: Meta, where: str, dataset: str | None, base: str | None, embedder: str | None) -> None:
    """Refuse an index built for another dataset or base (None: not known here, not checked), or with another
    embedder than the one served."""
    wrong_data = dataset is not None and meta.dataset != dataset
    wrong_base = base is not None and meta.base is not None and meta.base != base
    if wrong_data or wrong_base:
        expected = f"dataset {dataset or meta.dataset}, base {base or meta.base or 'unknown'}"
        raise StrataError(f"the evidence index {where} was built for {meta.fingerprint()}, but this server serves "
                          f"{expected}; rebuild it with `strata build index` (or point --index at the right one).")
    if embedder is not None and meta.embedder is not None and meta.embedder != embedder:
        raise StrataError(f"the evidence index {where} holds vectors of embedder {meta.embedder}, but "
                          f"--embedding-model is {embedder}; rebuild the index with that model or serve the one it "
                          "was built with.")


def release_index(root: Path) -> Path | None:
    """A pulled release's index.sqlite, when it carries one."""
    path = Path(root) / "index" / "index.sqlite"
    return path if path.is_file() else None
