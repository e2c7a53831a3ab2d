"""Workspace layout and environment variables, resolved flag > env > default (seed 003 defaults)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# env var -> default, relative paths are taken relative to WORKSPACE.
DEFAULTS: dict[str, str] = {
    "WORKSPACE": "./workspace",
    "BASE_MODEL": "models/hf_base",
    "MODEL_NAME": "strata",
    "MODEL_PATH": "models/{MODEL_NAME}.Q4_K_M.gguf",
    "PDF_ARCHIVE_PATH": "data/archive",
    "N_CTX": "2048",
    "N_THREADS": str(max(1, min(8, os.cpu_count() or 1))),
}

# The topic of a PDF directly in raw_pdfs/ and of a dataset record without one (topics are raw_pdfs/<topic>/).
DEFAULT_TOPIC = "general"
SKELETON = ("data/raw_pdfs", "data/processed", "data/archive", "models", "peft", "runs")


def _pick(name: str, flag: object, env: dict[str, str]) -> str:
    """Return the flag if given, else the env var if set and non-empty, else the default."""
    if flag is not None:
        return str(flag)
    value = env.get(name, "")
    return value if value.strip() else DEFAULTS[name]


def _under(workspace: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else workspace / path


@dataclass(frozen=True)
class Settings:
    """Every path and knob a stage needs; build one with :meth:`resolve`."""

    workspace: Path
    base_model: str
    model_path: Path
    pdf_archive: Path
    n_ctx: int
    n_threads: int

    @classmethod
    def resolve(
        cls,
        workspace: str | os.PathLike | None = None,
        base_model: str | None = None,
        model_path: str | os.PathLike | None = None,
        pdf_archive: str | os.PathLike | None = None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        env: dict[str, str] | None = None,
    ) -> "Settings":
        env = dict(os.environ if env is None else env)
        ws = Path(_pick("WORKSPACE", workspace, env)).expanduser().absolute()
        base = _pick("BASE_MODEL", base_model, env)
        # A hub id (org/name) stays a string; a local path is anchored at the workspace.
        if not _looks_like_hub_id(base, ws):
            base = str(_under(ws, base))
        model = _pick("MODEL_PATH", model_path, env).replace("{MODEL_NAME}", _pick("MODEL_NAME", None, env))
        return cls(
            workspace=ws,
            base_model=base,
            model_path=_under(ws, model),
            pdf_archive=_under(ws, _pick("PDF_ARCHIVE_PATH", pdf_archive, env)),
            n_ctx=_positive_int("N_CTX", _pick("N_CTX", n_ctx, env)),
            n_threads=_positive_int("N_THREADS", _pick("N_THREADS", n_threads, env)),
        )

    # Derived paths: the workspace is the hand-off between stages.
    @property
    def raw_pdfs(self) -> Path:
        return self.workspace / "data" / "raw_pdfs"

    @property
    def processed(self) -> Path:
        return self.workspace / "data" / "processed"

    @property
    def pretest_json(self) -> Path:
        return self.processed / "pdf_pretest.json"

    @property
    def train_jsonl(self) -> Path:
        return self.processed / "train.jsonl"

    @property
    def val_jsonl(self) -> Path:
        return self.processed / "val.jsonl"

    @property
    def pairs_train_jsonl(self) -> Path:
        """Synthesized question/answer pairs the chat levels and topic layers train on."""
        return self.processed / "pairs_train.jsonl"

    @property
    def pairs_val_jsonl(self) -> Path:
        """Held-out pairs: the base-vs-layer gate scores these."""
        return self.processed / "pairs_val.jsonl"

    @property
    def paraphrases_jsonl(self) -> Path:
        """A teacher's paraphrase of each chunk (level 1 trains on them beside the text)."""
        return self.processed / "paraphrases.jsonl"

    @property
    def synthesis_summary(self) -> Path:
        return self.processed / "synthesis_summary.json"

    @property
    def models(self) -> Path:
        return self.workspace / "models"

    @property
    def peft(self) -> Path:
        return self.workspace / "peft"

    @property
    def merged(self) -> Path:
        return self.peft / "merged"

    @property
    def runs(self) -> Path:
        return self.workspace / "runs"

    def ensure_skeleton(self) -> None:
        """Create the workspace folders every stage expects."""
        for sub in SKELETON:
            (self.workspace / sub).mkdir(parents=True, exist_ok=True)


def _looks_like_hub_id(value: str, workspace: Path) -> bool:
    """`org/name` with no local match is a Hugging Face hub id; anything else is a path."""
    if value.startswith((".", "/", "~")) or value.count("/") != 1:
        return False
    return not (workspace / value).exists() and not Path(value).exists() and not value.startswith("models/")


def _positive_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be at least 1, got {number}")
    return number
