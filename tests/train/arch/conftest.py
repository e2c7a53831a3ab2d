"""Tiny random-weight bases of the families users bring (hidden 256, 2 layers), on the kit's SentencePiece
tokenizer, built on first use in the session; plus a tiny dataset and a workspace per test."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from strata.settings import Settings


@dataclass(frozen=True)
class Family:
    """How to build one tiny base: transformers model_type, config fields beyond the shared shape, tokenizer."""

    model_type: str
    config: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = "kit"  # kit | kit+endoftext (adds Phi-3's <|endoftext|>) | bpe (a byte-level BPE, no tokenizer.model)
    vocab_extra: int = 0  # embedding rows beyond the tokenizer's size


FAMILIES: dict[str, Family] = {
    # a window inside the context that llama.cpp's llama arch does not apply (checked by the note), wider than the
    # fidelity sample so the sample still matches
    "mistral": Family("mistral", {"sliding_window": 512}),
    "qwen2": Family("qwen2"),  # transformers reads the kit tokenizer as Qwen2Tokenizer, which adds id 1024
    "qwen2-padded": Family("qwen2", vocab_extra=1),  # an embedding with room for that id, as real Qwen2 has
    "qwen2-bpe": Family("qwen2", tokenizer="bpe"),  # takes llama.cpp's BPE path with a pre-tokenizer it cannot know
    "gemma": Family("gemma", {"head_dim": 64}),
    # Gemma 2 soft-caps attention; llama.cpp scales queries by 1/sqrt(head_dim), as real Gemma 2 configs do ...
    "gemma2": Family("gemma2", {"head_dim": 64, "query_pre_attn_scalar": 64}),
    # ... and ignores query_pre_attn_scalar, so a config where the two differ is served wrong (the gate must refuse)
    "gemma2-qscale": Family("gemma2", {"head_dim": 64, "query_pre_attn_scalar": 256}),
    "phi3": Family("phi3", tokenizer="kit+endoftext"),  # fused qkv_proj / gate_up_proj
    "phi3-no-endoftext": Family("phi3"),  # llama.cpp's Phi-3 vocab rules look up <|endoftext|> by name
    "llama-tied": Family("llama", {"tie_word_embeddings": True}),
    "opt": Family("opt", {"ffn_dim": 512, "word_embed_proj_dim": 256}),  # not in llama.cpp's converter
}
SHAPE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 1024, "pad_token_id": None}
KIT_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
# Training small enough for seconds per family on CPU; the adapter still moves the logits clearly.
QUICK = {"max_seq_len": 64, "batch_size": 2, "grad_accum": 1, "max_steps": 4, "lr": 1e-2, "save_steps": 1000,
         "eval_batches": 1}
SAMPLES = 8


def _tokenizer(kind: str, tiny_base: Path, dest: Path) -> Any:
    """Write the family's tokenizer files into `dest`; return the tokenizer transformers will load from there."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if kind == "bpe":
        from tokenizers import ByteLevelBPETokenizer

        from strata.kit.texts import corpus_texts

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(corpus_texts(), vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False)
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>")
        tokenizer.chat_template = AutoTokenizer.from_pretrained(tiny_base).chat_template
        tokenizer.save_pretrained(dest)
        return tokenizer
    for name in KIT_TOKENIZER_FILES:
        shutil.copy2(tiny_base / name, dest / name)
    if kind == "kit+endoftext":
        tokenizer = AutoTokenizer.from_pretrained(tiny_base)
        tokenizer.add_tokens(["<|endoftext|>"], special_tokens=True)
        tokenizer.save_pretrained(dest)
    return tokenizer if kind == "kit+endoftext" else AutoTokenizer.from_pretrained(tiny_base)


def build_family(name: str, tiny_base: Path, dest: Path) -> Path:
    """One tiny random-weight base of `FAMILIES[name]` at `dest` (config, safetensors, tokenizer, chat template)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    family = FAMILIES[name]
    dest.mkdir(parents=True)
    tokenizer = _tokenizer(family.tokenizer, tiny_base, dest)
    config = AutoConfig.for_model(family.model_type, **SHAPE, **family.config,
                                  vocab_size=len(tokenizer) + family.vocab_extra,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def family_base(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """family name -> its tiny base dir, built once per session on first use (about a second each). The dir is
    named after the family: llama.cpp reads general.name (from the dir name) for some tokenizer rules."""
    root = tmp_path_factory.mktemp("families")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build_family(name, tiny_base, root / name)
        return built[name]

    return get


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """train.jsonl / val.jsonl: a few kit paragraphs as text records (every 5th held out)."""
    from strata.kit.texts import corpus_texts

    paragraphs = [p.strip() for text in corpus_texts() for p in text.split("\n\n") if len(p.strip()) > 200]
    records = [{"id": f"p{n}", "text": p, "topic": "general"} for n, p in enumerate(paragraphs[:15])]
    folder = tmp_path_factory.mktemp("arch-dataset")
    for name, rows in (("train.jsonl", [r for n, r in enumerate(records) if n % 5]),
                       ("val.jsonl", [r for n, r in enumerate(records) if n % 5 == 0])):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "train.jsonl", folder / "val.jsonl"


@pytest.fixture
def on_family(workspace: Settings, tiny_dataset: tuple[Path, Path], family_base: Callable[[str], Path]):
    """name -> this test's workspace with BASE_MODEL at that family's base and the tiny dataset in place."""

    def point(name: str) -> Settings:
        settings = Settings.resolve(workspace=workspace.workspace, base_model=str(family_base(name)), n_threads=1)
        for src in tiny_dataset:
            shutil.copy(src, settings.processed / src.name)
        return settings

    return point


@pytest.fixture
def train1() -> Callable[..., list[Path]]:
    """train_level(settings, 1, ...) sized for seconds on CPU (`overrides` update the quick ones)."""
    from strata.train.trainer import train_level

    def train(settings: Settings, overrides: dict[str, Any] | None = None, **kwargs: Any) -> list[Path]:
        return train_level(settings, 1, overrides={**QUICK, **(overrides or {})}, max_train_samples=SAMPLES,
                           progress=False, **kwargs)

    return train
