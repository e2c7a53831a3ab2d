"""What data, train and export share about a Hugging Face model folder: resolving --base-model (a local dir, or a
hub id fetched once into models/<name>), its fingerprint, its weight files and the extras beside them, its chat
template, and the device and attention implementation to load it with."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

from strata.errors import StrataError
from strata.files import read_json_or_none
from strata.settings import Settings

WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".gguf"}
MODEL_FILES = {"config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json"}
SAMPLES_PER_FILE = 16  # weight chunks read per safetensors file: enough to tell two checkpoints apart
SAMPLE_BYTES = 1 << 16
SUMMARY = "training_summary.json"  # in every adapter dir, written last by training
CHAT_TEMPLATE_PLACES = "chat_template.jinja, chat_template.json, or chat_template in tokenizer_config.json"

# Weight formats we never need when safetensors exist; keeps a 7B fetch to one copy of the weights.
SKIP = ["*.bin", "*.pth", "*.pt", "*.msgpack", "*.h5", "*.gguf", "original/*", "consolidated*"]
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def is_hub_id(value: str) -> bool:
    """`org/name` that is not an existing path."""
    return value.count("/") == 1 and not value.startswith((".", "/", "~")) and not Path(value).exists()


def base_model_dir(settings: Settings, base_model: str | None = None) -> tuple[str, Path, bool]:
    """(the --base-model / BASE_MODEL value, the folder it names, whether it is a hub id), checking and fetching
    nothing: a local dir as given (or under the workspace), a hub id's models/<name> (where it is fetched or placed)."""
    value = str(base_model or settings.base_model)
    local = Path(value).expanduser()
    if not local.is_absolute() and not local.exists() and (settings.workspace / local).exists():
        local = settings.workspace / local
    if not local.is_dir() and is_hub_id(value):
        return value, settings.models / value.split("/")[1], True
    return value, local, False


def resolve_base_model(settings: Settings, base_model: str | None = None) -> Path:
    """The local HF dir of the base: `base_model` (or settings.base_model) as a dir, else a hub id fetched once."""
    value, local, hub = base_model_dir(settings, base_model)
    if hub:
        return fetch_hub_model(value, local)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise StrataError(f"base model dir {local} has no config.json; it must be a Hugging Face model dir "
                              "(config.json, *.safetensors, tokenizer files).")
        return local
    raise StrataError(f"base model {value} not found. Set BASE_MODEL or --base-model to a Hugging Face model dir "
                      f"or a hub id (org/name); the default is {settings.models / 'hf_base'}.")


def fetch_hub_model(repo_id: str, dest: Path) -> Path:
    """Download `repo_id` into `dest` once (into a .partial dir, renamed when complete)."""
    if (dest / "config.json").is_file():
        return dest
    by_hand = (f"Place the model by hand: on a machine with access run `huggingface-cli download {repo_id} "
               f"--local-dir {dest}` and copy that folder here, then pass --base-model {dest}.")
    if any(os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"} for name in OFFLINE_VARS):
        raise StrataError(f"cannot fetch base model {repo_id}: Hugging Face hub access is off (HF_HUB_OFFLINE). {by_hand}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    partial = dest.with_name(dest.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        snapshot_download(repo_id, local_dir=partial, token=os.environ.get("HF_TOKEN") or None, ignore_patterns=SKIP)
    except GatedRepoError:
        raise StrataError(f"{repo_id} is gated: accept its licence on huggingface.co and set HF_TOKEN. {by_hand}") from None
    except RepositoryNotFoundError:
        raise StrataError(f"{repo_id} was not found on the Hugging Face hub (or is private: set HF_TOKEN). "
                          "Check the id, or pass a local model dir.") from None
    except Exception as exc:  # network down, DNS, proxy: all the same to the user
        raise StrataError(f"could not download base model {repo_id} ({type(exc).__name__}: {exc}). {by_hand}") from None
    if not (partial / "config.json").is_file():
        raise StrataError(f"{repo_id} downloaded without a config.json; it is not a Transformers model. {by_hand}")
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest


def fingerprint(model_dir: Path) -> str:
    """A stable id of an HF model dir, cheap for a 7B model: config.json, every weight file's name, size and
    safetensors header, and 16 evenly spaced 64 KiB samples of its bytes (first and last included) (about 1 MiB read per file)."""
    model_dir = Path(model_dir)
    config = model_dir / "config.json"
    if not config.is_file():
        raise StrataError(f"{model_dir} is not a Hugging Face model dir (no config.json); point --base-model / "
                          "BASE_MODEL at one.")
    digest = hashlib.sha256(json.dumps(json.loads(config.read_text()), sort_keys=True).encode())
    weights = sorted([*model_dir.glob("*.safetensors"), *model_dir.glob("*.bin")])
    if not weights:
        raise StrataError(f"{model_dir} has no *.safetensors or *.bin weights; the base model is incomplete.")
    for path in weights:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as handle:
            if path.suffix == ".safetensors":
                (length,) = struct.unpack("<Q", handle.read(8))
                digest.update(handle.read(length))
            for index in range(SAMPLES_PER_FILE):  # first to last chunk, evenly spaced
                handle.seek(max(0, size - SAMPLE_BYTES) * index // (SAMPLES_PER_FILE - 1))
                digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()[:32]


def read_summary(adapter_dir: Path) -> dict[str, Any] | None:
    """The adapter's training_summary.json, or None when it is missing or unreadable."""
    return read_json_or_none(Path(adapter_dir) / SUMMARY)


def level_dir(settings: Settings, level: int) -> Path:
    """peft/level<N>/: where level N's adapter lives."""
    return settings.peft / f"level{level}"


def load_base_with_levels(base_dir: Path, level_dirs: list[Path], dtype: Any, **load_kwargs: Any) -> Any:
    """The HF causal LM at `base_dir` in `dtype` with each PEFT adapter in `level_dirs` merged in, in order
    (level 1 first). LoRA and DoRA merge the same way. Never call on a 4-bit/8-bit base: merge in 16/32-bit."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype, **load_kwargs)
    for folder in level_dirs:
        try:
            model = PeftModel.from_pretrained(model, folder).merge_and_unload()
        except Exception as exc:  # corrupt or foreign adapter files: name the level, not the library internals
            raise StrataError(f"cannot load the adapter in {folder} ({type(exc).__name__}: {exc}); retrain it "
                              f"(strata build train) or restore its files.") from exc
    return model


def extra_files(model_dir: Path) -> list[Path]:
    """The folder's files that are neither weights nor what save_pretrained writes: tokenizer.model,
    tokenizer*.json, special tokens, chat template, generation config."""
    return [path for path in sorted(Path(model_dir).iterdir())
            if path.is_file() and path.suffix not in WEIGHT_SUFFIXES and path.name not in MODEL_FILES]


def copy_model_extras(base_dir: Path, dest: Path) -> list[str]:
    """Copy the base's extra files (see extra_files) that `dest` lacks; returns the names copied."""
    copied = []
    for extra in extra_files(base_dir):
        if not (dest / extra.name).exists():
            shutil.copy2(extra, dest / extra.name)
            copied.append(extra.name)
    return copied


def has_chat_template(model_dir: Path) -> bool:
    """A chat template in one of the places transformers reads it from (CHAT_TEMPLATE_PLACES)."""
    model_dir = Path(model_dir)
    inline = (read_json_or_none(model_dir / "tokenizer_config.json") or {}).get("chat_template")
    return bool(inline) or any((model_dir / name).is_file() for name in ("chat_template.jinja", "chat_template.json"))


def require_chat_template(present: bool, where: str, why: str, fix: str) -> None:
    """The one missing-chat-template error: `where` has none, so `why`; then what to do (`fix`)."""
    if not present:
        raise StrataError(f"{where} has no chat template, so {why}. {fix}")


def pick_device(quantization: str) -> tuple[str, Any]:
    """CUDA with bf16 when present, else CPU fp32; 8/4-bit loading needs CUDA and bitsandbytes."""
    import torch

    cuda = torch.cuda.is_available()
    if quantization not in ("none", "int8", "int4"):
        raise StrataError(f"--quantization must be none, int8 or int4, got {quantization!r}")
    if quantization != "none":
        if not cuda:
            raise StrataError(f"--quantization {quantization} (QLoRA through bitsandbytes) needs a CUDA GPU and this "
                              "machine has none; train with --quantization none on CPU.")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise StrataError(f"--quantization {quantization} needs bitsandbytes: pip install bitsandbytes "
                              "(the CUDA image has it).") from None
    if cuda:
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return "cpu", torch.float32


def attention_kwargs(device: str, dtype: Any) -> dict[str, Any]:
    """Model-loading kwargs for attention: FlashAttention-2 on CUDA in bf16 when installed, else PyTorch SDPA."""
    import torch

    if device == "cuda" and dtype == torch.bfloat16:
        try:
            import flash_attn  # noqa: F401

            return {"attn_implementation": "flash_attention_2"}
        except ImportError:
            pass
    return {"attn_implementation": "sdpa"}
