"""The bench model (random-weight Llama from the kit, Q4_K_M GGUF) and its GGUF LoRAs, cached by their spec."""

from __future__ import annotations

import ctypes
import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from llama_server import cache_root

from strata.kit.tiny_base import TinySpec

# alpha..delta are loaded at start (four streams on four adapters); epsilon is the never-seen "new" adapter
LORA_NAMES = ("alpha", "beta", "gamma", "delta", "epsilon")
STARTUP_LORAS = LORA_NAMES[:4]
NEW_LORA = LORA_NAMES[4]


@dataclass(frozen=True)
class BenchModelSpec:
    """Shape of the bench model: big enough (>= 200 MB at Q4_K_M) that decode reads a lot of memory per token."""

    model: TinySpec = TinySpec(hidden=2048, intermediate=5632, layers=10, heads=16, kv_heads=4, vocab=2048,
                               context=2048)
    lora_rank: int = 16
    quant: str = "Q4_K_M"
    seed: int = 0
    eos_guard: bool = True  # greedy decoding never picks EOS, so every peer generates exactly max_tokens
    loras: tuple[str, ...] = LORA_NAMES


@dataclass(frozen=True)
class BenchModel:
    gguf: Path
    loras: dict[str, Path]
    meta: dict

    @property
    def eos_id(self) -> int:
        return int(self.meta["eos_id"])


def model_dir(spec: BenchModelSpec) -> Path:
    key = json.dumps({**asdict(spec), "llama_cpp_python": metadata.version("llama-cpp-python")}, sort_keys=True)
    return cache_root() / "bench" / hashlib.sha1(key.encode()).hexdigest()[:12]


def ensure_bench_model(spec: BenchModelSpec = BenchModelSpec(), log=print) -> BenchModel:
    """Return the cached bench model, building it once (HF random init -> F16 GGUF -> quantized; PEFT LoRAs)."""
    root = model_dir(spec)
    meta_file = root / "meta.json"
    if not meta_file.is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=root.parent, prefix=".build-"))
        try:
            start = time.perf_counter()
            log(f"making the bench model once ({spec.model.layers} layers, hidden {spec.model.hidden}, {spec.quant}) in {root}")
            meta = _build(spec, work, log)
            meta["built_s"] = round(time.perf_counter() - start, 1)
            (work / "meta.json").write_text(json.dumps(meta, indent=2))
            shutil.rmtree(root, ignore_errors=True)
            work.rename(root)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    meta = json.loads(meta_file.read_text())
    return BenchModel(gguf=root / "model.gguf", loras={n: root / f"lora-{n}.gguf" for n in spec.loras}, meta=meta)


def _build(spec: BenchModelSpec, work: Path, log) -> dict:
    from strata.kit.texts import corpus_texts
    from strata.kit.tiny_base import make_tiny_base
    from strata.llamacpp import convert_hf, convert_lora

    hf = work / "hf"
    make_tiny_base(hf, corpus_texts(), spec.model, pretrain_steps=0, seed=spec.seed)
    if spec.eos_guard:
        _guard_eos(hf)
    log("  HF model written; making LoRAs")
    for index, name in enumerate(spec.loras):
        adapter = _make_lora(hf, work / f"peft-{name}", spec.lora_rank, spec.seed + 1 + index)
        convert_lora(adapter, hf, work / f"lora-{name}.gguf", outtype="f16")
        shutil.rmtree(adapter)
    log("  converting to F16 GGUF")
    f16 = convert_hf(hf, work / "model-f16.gguf", outtype="f16")
    log(f"  quantizing to {spec.quant}")
    _quantize(f16, work / "model.gguf", spec.quant)
    config = json.loads((hf / "config.json").read_text())
    f16.unlink()
    shutil.rmtree(hf)
    return {"spec": asdict(spec), "eos_id": config["eos_token_id"], "bos_id": config["bos_token_id"],
            "vocab": config["vocab_size"], "gguf_bytes": (work / "model.gguf").stat().st_size,
            "weight_bytes_per_token": _weight_bytes_per_token(work / "model.gguf")}


def _guard_eos(hf: Path, dim: int = 0) -> None:
    """Random weights end greedy text at once; llama-cpp-python's server has no ignore_eos, so the model itself
    must never pick EOS for every peer to generate exactly max_tokens.

    So residual dimension `dim` carries a constant: every token embedding sets it to 1 and no layer writes to it.
    The EOS row of the output head reads only that dimension, negatively, and no other row reads it: the EOS logit
    is always below zero while the top other logit (of ~2000 random ones) is above it. Cost per token is unchanged.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    eos = model.config.eos_token_id
    with torch.no_grad():
        model.model.embed_tokens.weight[:, dim] = 1.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[dim, :] = 0.0
            layer.mlp.down_proj.weight[dim, :] = 0.0
        model.lm_head.weight[:, dim] = 0.0
        model.lm_head.weight[eos, :] = 0.0
        model.lm_head.weight[eos, dim] = -1.0
    model.save_pretrained(hf)
    del model


def _make_lora(hf: Path, out: Path, rank: int, seed: int) -> Path:
    """A PEFT LoRA on every linear layer with random (non-zero) A and B, saved untrained: speed needs no training."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.bfloat16)
    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # keep the adapter's effect modest so greedy text stays text-like, not NaN
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.01)
    peft_model.save_pretrained(out)
    del peft_model, model
    return out


def _quantize(src: Path, dest: Path, quant: str) -> None:
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dest).encode(), ctypes.byref(params))
    if rc != 0 or not dest.is_file():
        raise RuntimeError(f"llama_model_quantize({src} -> {quant}) failed with {rc}")


def _weight_bytes_per_token(gguf_path: Path) -> int:
    """Bytes of weights one decode step reads: every tensor except the token-embedding table (one row is read)."""
    from gguf import GGUFReader

    reader = GGUFReader(gguf_path)
    return int(sum(t.n_bytes for t in reader.tensors if t.name != "token_embd.weight"))
