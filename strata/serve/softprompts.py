"""Soft prompts (PEFT prompt tuning) on the served GGUF: the n_virtual x n_embd matrix read and checked from its
GGUF, the registry of loaded ones with the default and its on/off switch, and the embedding-batch prefill that
decodes the virtual tokens into a sequence's KV at positions 0..k-1, before the prompt's tokens (PEFT's order:
the virtual tokens come before BOS)."""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from strata.serve.adapters import FINGERPRINT_KEY, check_path, is_allowed
from strata.serve.errors import ApiError

GGUF_NAME = "softprompt.gguf"  # inside soft_prompts/NAME/, beside the PEFT files
TYPE = "softprompt"  # general.type of the artifact
TENSOR = "softprompt.embd"  # float32, numpy shape [n_virtual, n_embd]
KEY_N_VIRTUAL = "softprompt.n_virtual_tokens"
KEY_N_EMBD = "softprompt.n_embd"
KEY_NAME = "softprompt.name"
FOLDER = "soft_prompts"  # WORKSPACE/soft_prompts/NAME/
MAX_VIRTUAL = 4096  # markers of one soft prompt: -(id * MAX_VIRTUAL + i + 1), never a real token id
# Architectures whose graph scales or transforms input embeddings (Gemma multiplies every input row by sqrt(n_embd),
# Granite by its embedding multiplier): PEFT's virtual rows bypass the HF embedding module, so the same matrix
# would not mean the same thing on both sides. Refused in training and here, with this reason.
TRANSFORMED_INPUT = {"gemma", "gemma2", "gemma3", "gemma3n", "gemma-embedding", "granite", "granitemoe",
                     "granitehybrid"}
REFUSED = ("soft prompts are refused on architecture {arch!r}: its model scales or transforms input embeddings "
           "inside the graph (e.g. Gemma's sqrt(n_embd)), so injected virtual tokens would not match HF PEFT")


@dataclass(frozen=True)
class Target:
    """What a soft prompt must fit: the served model's architecture, input width and (when known) base fingerprint."""

    architecture: str
    n_embd: int
    fingerprint: str | None = None


@dataclass
class SoftPrompt:
    """One loaded soft prompt: its matrix (C-contiguous float32) and what GET /soft-prompts lists."""

    id: int
    name: str
    path: str  # as given (a name or a path)
    file: Path
    key: tuple[str, int]  # (real path, mtime_ns)
    matrix: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_virtual(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def markers(self) -> list[int]:
        """Stand-ins for the virtual tokens in a slot's cached token list: negative, so never a real token, and
        distinct per soft prompt, so the prefix cache keys on the soft prompt without another field."""
        return [-(self.id * MAX_VIRTUAL + i + 1) for i in range(self.n_virtual)]

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "path": self.path, "file": str(self.file),
                "n_virtual_tokens": self.n_virtual, "n_embd": int(self.matrix.shape[1]), **self.meta}


def read_soft_prompt(file: Path) -> tuple[dict[str, Any], np.ndarray]:
    """(metadata, matrix [n_virtual, n_embd] float32) of a soft-prompt GGUF; 422 naming the problem otherwise."""
    from gguf import GGMLQuantizationType, GGUFReader

    from strata.serve.adapters import _field_value

    try:
        reader = GGUFReader(str(file))
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a GGUF"
        raise ApiError(422, f"{file} is not a readable GGUF file ({exc}); `strata build train --soft-prompt NAME` "
                            f"writes {GGUF_NAME}.") from None
    values = {name: _field_value(f) for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    if values.get("general.type") != TYPE:
        raise ApiError(422, f"{file} is a GGUF but not a soft prompt (general.type={values.get('general.type')!r}); "
                            "pass a soft prompt's dir or its softprompt.gguf, not a model or a LoRA.")
    tensors = {t.name: t for t in reader.tensors}
    if TENSOR not in tensors or tensors[TENSOR].tensor_type != GGMLQuantizationType.F32:
        raise ApiError(422, f"{file} has no float32 tensor {TENSOR}; re-export the soft prompt with strata.")
    tensor = tensors[TENSOR]
    n_embd, n_virtual = (int(n) for n in tensor.shape)  # GGUF order: ne0 (the row width) first
    matrix = np.ascontiguousarray(np.asarray(tensor.data, dtype=np.float32).reshape(n_virtual, n_embd))
    if not 1 <= n_virtual <= MAX_VIRTUAL:
        raise ApiError(422, f"{file} holds {n_virtual} virtual tokens; 1 to {MAX_VIRTUAL} are supported.")
    if values.get(KEY_N_VIRTUAL) not in (None, n_virtual) or values.get(KEY_N_EMBD) not in (None, n_embd):
        raise ApiError(422, f"{file}: its metadata says {values.get(KEY_N_VIRTUAL)} x {values.get(KEY_N_EMBD)} but "
                            f"the tensor is {n_virtual} x {n_embd}; the file is damaged, re-export it.")
    if not np.isfinite(matrix).all():
        raise ApiError(422, f"{file}: the soft prompt holds NaN or inf values, so every reply under it would be "
                            "broken (a diverged training run, say); retrain it with a lower lr.")
    meta = {"architecture": values.get("general.architecture"), "base_fingerprint": values.get(FINGERPRINT_KEY),
            "trained_name": values.get(KEY_NAME)}
    return meta, matrix


def check_fits(file: Path, meta: dict[str, Any], matrix: np.ndarray, target: Target) -> None:
    """422 unless the soft prompt was made for this model: architecture, input width, base fingerprint."""
    arch = meta.get("architecture")
    if target.architecture in TRANSFORMED_INPUT:
        raise ApiError(422, REFUSED.format(arch=target.architecture) + ".")
    if arch and target.architecture and arch != target.architecture:
        raise ApiError(422, f"{file} is a soft prompt for architecture {arch!r} but the served model is "
                            f"{target.architecture!r}; train it on this base.")
    if matrix.shape[1] != target.n_embd:
        raise ApiError(422, f"{file}: the soft prompt's rows are {matrix.shape[1]} wide but the served model's input "
                            f"embeddings are {target.n_embd} wide (dimension mismatch); train it on this base.")
    fp = meta.get("base_fingerprint")
    if fp and target.fingerprint and fp != target.fingerprint:
        raise ApiError(422, f"{file} was trained on base fingerprint {fp} but the served model is base "
                            f"{target.fingerprint}; train the soft prompt on this base.")


def resolve_file(ref: str, roots: list[Path], workspace: Path | None) -> Path:
    """A name (WORKSPACE/soft_prompts/NAME) or a path (a dir holding softprompt.gguf, or the .gguf) -> the real
    file: 400 unusable, 403 outside the allowed roots, 404 missing, 422 no soft prompt inside."""
    if not isinstance(ref, str) or not ref.strip():
        raise ApiError(400, "\"soft_prompt\" must be a non-empty name or path")
    check_path(ref, "soft_prompt")
    is_name = "/" not in ref and not ref.endswith(".gguf") and ref not in (".", "..")
    if is_name:
        if workspace is None:
            raise ApiError(404, f"no soft prompt named {ref!r}: this server has no WORKSPACE; pass a path instead.")
        given = Path(workspace) / FOLDER / ref
        if not given.exists():
            raise ApiError(404, f"no soft prompt named {ref!r} (looked for {given}); GET /soft-prompts lists the "
                                "available ones, `strata build train --soft-prompt NAME` trains one.")
    else:
        given = Path(os.path.expanduser(ref))
    real = Path(os.path.realpath(given))
    if not is_allowed(real, roots):
        raise ApiError(403, f"soft prompt path {ref} lies outside the allowed roots {[str(r) for r in roots]}; put it "
                            "under WORKSPACE or start the server with --adapter-root DIR.")
    if not real.exists():
        raise ApiError(404, f"soft prompt path {ref} does not exist; check the path (soft prompts live under "
                            f"WORKSPACE/{FOLDER}/<name>).")
    if real.is_dir():
        real = real / GGUF_NAME
        if not real.is_file():
            raise ApiError(422, f"{ref} holds no {GGUF_NAME}; train it with `strata build train --soft-prompt NAME`.")
    elif not real.is_file():
        raise ApiError(422, f"soft prompt path {ref} is not a regular file or a dir.")
    return real


class SoftPrompts:
    """Every loaded soft prompt, the default one and the switch that applies it. Thread-safe: loads run in worker
    threads; the matrices are read-only once loaded, so the decode thread uses them without a lock."""

    def __init__(self, target: Target, roots: list[Path], workspace: Path | None) -> None:
        self.target = target
        self.roots = roots
        self.workspace = workspace
        self.loaded: dict[int, SoftPrompt] = {}  # copy-on-write
        self.default: SoftPrompt | None = None
        self.enabled = False
        self._next_id = 0
        self._lock = threading.Lock()

    def resolve(self, ref: str) -> SoftPrompt:
        """A name or path -> a loaded soft prompt (loading it, or a newer copy of its file, now)."""
        file = resolve_file(ref, self.roots, self.workspace)
        key = (str(file), file.stat().st_mtime_ns)
        with self._lock:
            for soft in self.loaded.values():
                if soft.key == key:
                    return soft
            meta, matrix = read_soft_prompt(file)
            check_fits(file, meta, matrix, self.target)
            soft = SoftPrompt(id=self._next_id, name=_display_name(ref, file), path=ref, file=file, key=key,
                              matrix=matrix, meta=meta)
            self._next_id += 1
            self.loaded = {**self.loaded, soft.id: soft}
        return soft

    def configure(self, enabled: bool, default: str | None) -> None:
        """Set the default and the switch together; a default that does not load (checked only when enabled) is an
        ApiError and nothing changes."""
        if enabled and not default:
            raise ApiError(422, "soft prompts cannot be enabled without a default soft prompt; give \"default\": "
                                "NAME (or --soft-prompt NAME / SOFT_PROMPT).")
        try:
            chosen = self.resolve(default) if default and enabled else (self._quiet(default) if default else None)
        except ApiError as exc:  # a setting that cannot be applied, whatever the reason: 422, state kept
            raise ApiError(422 if exc.status != 400 else 400, f"the default soft prompt was not changed: {exc.message}") from None
        self.default, self.enabled = chosen, enabled

    def _quiet(self, default: str) -> SoftPrompt | None:
        """A default named while disabled: kept if it loads, otherwise checked again when enabled."""
        try:
            return self.resolve(default)
        except ApiError:
            return None

    def for_request(self, value: str | bool | None) -> SoftPrompt | None:
        """A request's "soft_prompt": a name/path, false for none, absent/null for the default (when enabled)."""
        if value is False:
            return None
        if value is None:
            return self.default if self.enabled else None
        return self.resolve(value)

    def available(self) -> list[str]:
        """Names trained under WORKSPACE/soft_prompts/ (the console's choices)."""
        folder = Path(self.workspace) / FOLDER if self.workspace else None
        if folder is None or not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / GGUF_NAME).is_file())

    def listing(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "default": self.default.name if self.default else None,
                "n_embd": self.target.n_embd, "soft_prompts": [s.describe() for s in self.loaded.values()],
                "available": self.available()}


def _display_name(ref: str, file: Path) -> str:
    return file.parent.name if file.name == GGUF_NAME else file.stem


def sequence(soft: SoftPrompt | None, prompt: list[int]) -> list[int]:
    """What a sequence's KV holds for a job: the soft prompt's markers, then the prompt tokens."""
    return soft.markers + prompt if soft is not None else prompt


def prefill_markers(soft: SoftPrompt, todo: list[int]) -> tuple[np.ndarray, int]:
    """(rows of the soft prompt still to decode, how many markers lead `todo`): a slot that reused part of the
    soft prompt from its cache starts from the first row it lacks."""
    count = next((i for i, t in enumerate(todo) if t >= 0), len(todo))
    first = (-todo[0] - 1) % MAX_VIRTUAL
    return soft.matrix[first:first + count], count


class Prefill:
    """The embedding batch (llama_batch_init(n, n_embd, 1): batch.embd instead of batch.token) that puts a soft
    prompt's rows into one sequence's KV. Used only on the thread that owns the context."""

    def __init__(self, n_batch: int, n_embd: int) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.n_batch, self.n_embd = n_batch, n_embd
        self._batch = llama_cpp.llama_batch_init(n_batch, n_embd, 1)

    def decode(self, ctx: Any, matrix: np.ndarray, seq: int, pos0: int, last_logits: bool = False) -> int:
        """llama_decode the rows of `matrix` at positions pos0.. of sequence `seq` (in chunks of n_batch); returns
        llama.cpp's code (0 = ok). With `last_logits` the last row's logits are kept (for a scorer)."""
        rows = np.ascontiguousarray(matrix, dtype=np.float32)
        batch = self._batch
        for start in range(0, rows.shape[0], self.n_batch):
            chunk = rows[start:start + self.n_batch]
            n = chunk.shape[0]
            ctypes.memmove(batch.embd, chunk.ctypes.data, chunk.nbytes)
            for j in range(n):
                batch.pos[j], batch.n_seq_id[j] = pos0 + start + j, 1
                batch.seq_id[j][0] = seq
                batch.logits[j] = last_logits and start + j == rows.shape[0] - 1
            batch.n_tokens = n
            rc = self._lib.llama_decode(ctx, batch)
            if rc != 0:
                return rc
        return 0

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
