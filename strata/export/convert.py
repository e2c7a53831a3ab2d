"""`convert_to_gguf`: merged HF dir -> F16 GGUF -> quantized GGUF at MODEL_PATH, promoted only after fidelity checks pass."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from strata.errors import StrataError
from strata.export.quantize import ftype_for, quant_types, quantize_gguf
from strata.files import atomic_write_json, now_iso, staged_path
from strata.modelfolder import CHAT_TEMPLATE_PLACES, require_chat_template
from strata.settings import Settings

FALLBACK_TEXT = ("A lessee recognises a right-of-use asset and a lease liability at the commencement date. "
                 "Revenue is recognised when control of the promised goods or services transfers to the customer.")


@dataclass(frozen=True)
class FidelityPreset:
    """Thresholds and sample size for the conversion checks (presets/convert.yaml holds only what differs)."""

    max_relative_error: float = 1e-2  # F16 GGUF logits vs HF logits, ||got - want|| / ||want||
    min_top1_agreement: float = 0.9  # share of positions with the same arg-max token
    max_tokens: int = 256  # val tokens scored (both checks)
    val_records: int = 16  # first N val.jsonl records make the sample text
    quant_timeout_s: float = 3600.0  # a quantization running longer is stopped


def model_stem(model_path: Path) -> str:
    """`strata.Q4_K_M.gguf` -> `strata`: the model name without a quant suffix."""
    stem = model_path.name.removesuffix(".gguf")
    head, _, tail = stem.rpartition(".")
    return head if head and tail.upper() in quant_types() else stem


def sample_text(val_jsonl: Path, records: int) -> tuple[str, str]:
    """(text, source): the first val records joined (their text, else their chat messages), else a fixed sentence."""
    if not val_jsonl.is_file():
        return FALLBACK_TEXT, "fixed sentence (no val.jsonl)"
    parts: list[str] = []
    with val_jsonl.open() as handle:
        for line in handle:
            if len(parts) >= records:
                break
            if not line.strip():
                continue
            row = json.loads(line)
            if isinstance(row.get("text"), str):
                parts.append(row["text"])
            elif isinstance(row.get("messages"), list):
                parts.append("\n".join(str(m.get("content", "")) for m in row["messages"]))
    text = "\n\n".join(p for p in parts if p.strip())
    return (text, str(val_jsonl)) if text else (FALLBACK_TEXT, f"fixed sentence ({val_jsonl} had no text)")


def base_name(hf_dir: Path) -> str | None:
    """For a merged dir (merge_record.json), the base's folder name, for the GGUF's general.name: llama.cpp keys
    some tokenizer rules on that name (e.g. Phi-3's), so the served model gets the base's. None otherwise."""
    from strata.export.merge import RECORD

    record = Path(hf_dir) / RECORD
    base = json.loads(record.read_text()).get("base_model") if record.is_file() else None
    return Path(base).name if base else None


def reference_provenance(hf_dir: Path) -> str | None:
    """What the HF reference really is when the kit made it (or the base it was merged onto): e.g. SmolLM2
    dequantized from a Q4_1 GGUF. None for any other model."""
    from strata.export.merge import RECORD

    record = Path(hf_dir) / RECORD
    base = json.loads(record.read_text()).get("base_model") if record.is_file() else None
    for folder in (Path(hf_dir), *([Path(base)] if base else [])):
        kit = folder / "strata_kit.json"
        if kit.is_file():
            return json.loads(kit.read_text()).get("provenance")
    return None


def chat_template(gguf_path: Path) -> str | None:
    """The `tokenizer.chat_template` stored in a GGUF, or None."""
    from strata.export.adapter_gguf import read_metadata

    return read_metadata(gguf_path, "tokenizer.chat_template")


def perplexity(gguf_path: Path, tokens: list[int], n_threads: int) -> float:
    """exp(mean NLL) of each next token under llama.cpp's logits (logits_all)."""
    from strata.export.fidelity import gguf_logits

    scores = gguf_logits(gguf_path, tokens, n_threads=n_threads).astype(np.float64)[:-1]
    scores -= scores.max(axis=-1, keepdims=True)
    log_probs = scores - np.log(np.exp(scores).sum(axis=-1, keepdims=True))
    nll = -log_probs[np.arange(len(tokens) - 1), tokens[1:]]
    return float(np.exp(nll.mean()))


def _require_template(gguf_path: Path, hf_dir: Path) -> None:
    require_chat_template(bool(chat_template(gguf_path)), f"{gguf_path.name} (tokenizer.chat_template)",
                          "chat requests would be formatted wrongly",
                          f"Add a chat template to {hf_dir} ({CHAT_TEMPLATE_PLACES}; `strata build merge` copies the "
                          "base's) and convert again.")


def check_f16(hf_dir: Path, f16: Path, tokens: list[int], preset: FidelityPreset, n_threads: int) -> dict[str, Any]:
    """F16 GGUF vs HF logits on the same tokens (HF with the attention implementation its family needs, named in
    the result); raises StrataError (with the numbers) past the thresholds."""
    from strata.export.fidelity import gguf_logits, hf_reference, relative_error, top1_agreement

    got = gguf_logits(f16, tokens, n_threads=n_threads)
    want, attention = hf_reference(hf_dir, tokens)
    numbers = {"relative_error": relative_error(got, want), "top1_agreement": top1_agreement(got, want),
               "hf_attention": attention}
    if numbers["relative_error"] > preset.max_relative_error or numbers["top1_agreement"] < preset.min_top1_agreement:
        raise StrataError(
            f"fidelity check failed: the F16 GGUF disagrees with the HF model ({attention} attention) on "
            f"{len(tokens)} val tokens "
            f"(relative error {numbers['relative_error']:.2e}, limit {preset.max_relative_error:.0e}; top-1 agreement "
            f"{numbers['top1_agreement']:.3f}, minimum {preset.min_top1_agreement}). The model was NOT promoted. "
            "Check that llama.cpp supports this architecture and the converter matches llama-cpp-python, "
            "or loosen presets/convert.yaml if the difference is expected.")
    return numbers


def convert_model(settings: Settings, hf_dir: Path | None = None, quant: str = "Q4_K_M", out: Path | None = None, *,
                  preset: str | os.PathLike = "convert", echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Merged HF dir -> F16 GGUF (kept in models/) -> `quant` GGUF at `out` (default MODEL_PATH), promoted by
    os.replace only after the fidelity checks pass. Returns the fidelity record (also written beside the model)."""
    from transformers import AutoTokenizer

    from strata.llamacpp import convert_hf
    from strata.presets import load_preset

    hf_dir = Path(hf_dir or settings.merged)
    if not (hf_dir / "config.json").is_file():
        raise StrataError(f"no HF model at {hf_dir} (config.json missing): run `strata build merge` first, or pass --hf DIR.")
    quant = quant.strip().upper()
    ftype_for(quant)
    thresholds = load_preset(FidelityPreset, preset)
    out = Path(out or settings.model_path)
    f16 = settings.models / f"{model_stem(out)}.F16.gguf"
    started = time.monotonic()

    echo(f"converting {hf_dir} to F16 GGUF with llama.cpp's convert_hf_to_gguf.py ...")
    with staged_path(f16, "partial") as tmp:
        convert_hf(hf_dir, tmp, "f16", log=f16.with_suffix(".convert.log"), model_name=base_name(hf_dir))
    _require_template(f16, hf_dir)

    text, source = sample_text(settings.val_jsonl, thresholds.val_records)
    tokens = AutoTokenizer.from_pretrained(hf_dir)(text)["input_ids"][: thresholds.max_tokens]
    if len(tokens) < 2:
        raise StrataError(f"the fidelity sample from {source} has {len(tokens)} token(s); it needs at least 2.")
    numbers = check_f16(hf_dir, f16, tokens, thresholds, settings.n_threads)
    echo(f"F16 vs HF ({numbers['hf_attention']} attention) on {len(tokens)} tokens: relative error "
         f"{numbers['relative_error']:.2e}, top-1 agreement {numbers['top1_agreement']:.3f}")
    if reference_provenance(hf_dir):
        echo(f"note: the HF reference is {reference_provenance(hf_dir)}")

    echo(f"quantizing to {quant} (llama_model_quantize) ...")
    with staged_path(out, "candidate") as candidate:
        quantize_gguf(f16, candidate, quant, settings.n_threads, thresholds.quant_timeout_s)
        _require_template(candidate, hf_dir)
        ppl = {"F16": perplexity(f16, tokens, settings.n_threads), quant: perplexity(candidate, tokens, settings.n_threads)}
    echo(f"perplexity on {len(tokens)} val tokens: F16 {ppl['F16']:.3f}, {quant} {ppl[quant]:.3f}")

    record = {
        "model_path": str(out), "quant": quant, "f16_gguf": str(f16), "hf_dir": str(hf_dir),
        "sample": {"source": source, "tokens": len(tokens)}, **numbers, "hf_reference": reference_provenance(hf_dir),
        "perplexity": ppl, "perplexity_ratio": ppl[quant] / ppl["F16"], "chat_template": True,
        "thresholds": asdict(thresholds), "passed": True, "bytes": out.stat().st_size,
        "duration_s": round(time.monotonic() - started, 2), "created": now_iso(),
    }
    record["record_path"] = str(atomic_write_json(out.with_name(out.name.removesuffix(".gguf") + ".fidelity.json"), record))
    echo(f"wrote {out} ({record['bytes'] / 1e6:.1f} MB); fidelity record {record['record_path']}")
    return record
