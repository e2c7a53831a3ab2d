"""Resolve --base-model: a local HF dir, or a hub id fetched once into models/<name> (HF_TOKEN, HF_HOME honoured)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from strata.errors import StrataError
from strata.settings import Settings

# Weight formats we never need when safetensors exist; keeps a 7B fetch to one copy of the weights.
SKIP = ["*.bin", "*.pth", "*.pt", "*.msgpack", "*.h5", "*.gguf", "original/*", "consolidated*"]
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def is_hub_id(value: str) -> bool:
    """`org/name` that is not an existing path."""
    return value.count("/") == 1 and not value.startswith((".", "/", "~")) and not Path(value).exists()


def resolve_base_model(settings: Settings, base_model: str | None = None) -> Path:
    """The local HF dir of the base: `base_model` (or settings.base_model) as a dir, else a hub id fetched once."""
    value = str(base_model or settings.base_model)
    local = Path(value).expanduser()
    if not local.is_absolute() and not local.exists() and (settings.workspace / local).exists():
        local = settings.workspace / local
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise StrataError(f"base model dir {local} has no config.json; it must be a Hugging Face model dir "
                              "(config.json, *.safetensors, tokenizer files).")
        return local
    if not is_hub_id(value):
        raise StrataError(f"base model {value} not found. Set BASE_MODEL or --base-model to a Hugging Face model dir "
                          f"or a hub id (org/name); the default is {settings.models / 'hf_base'}.")
    return fetch_hub_model(value, settings.models / value.split("/")[1])


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
