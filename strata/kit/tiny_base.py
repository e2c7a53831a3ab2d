"""Build a tiny Llama-architecture HF model locally: SentencePiece tokenizer, LlamaConfig, short pre-training."""

from __future__ import annotations

import io
import json
import math
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from strata.errors import StrataError

# Mistral-instruct style, so `--chat_format mistral-instruct` and the GGUF template agree.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
    "{% else %}{{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Model and training shape. Hidden and intermediate sizes are multiples of 256 so K-quants apply."""

    hidden: int = 256
    intermediate: int = 512
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    vocab: int = 1024
    context: int = 1024
    block: int = 128
    batch: int = 8
    lr: float = 3e-3


SPECS: dict[str, TinySpec] = {
    "test": TinySpec(),
    "demo": TinySpec(intermediate=768, layers=4, vocab=2048),
}


def make_tiny_base(
    dest: Path,
    texts: list[str],
    spec: TinySpec = SPECS["test"],
    pretrain_steps: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Write an HF model dir at `dest` (config, safetensors, tokenizer.model + HF tokenizer files, chat template).
    It is built beside `dest` and renamed into place, so an interrupted run never leaves a half-written model."""
    if not texts or not any(t.strip() for t in texts):
        raise StrataError("the tiny base needs corpus text: pass --corpus DIR with PDFs or .md/.txt files")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        _build(work, texts, spec, pretrain_steps, seed, progress)
        shutil.rmtree(dest, ignore_errors=True)
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _build(dest: Path, texts: list[str], spec: TinySpec, pretrain_steps: int, seed: int, progress: bool) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tokenizer(dest, texts, spec.vocab, seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.context,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    losses = _pretrain(model, tokenizer, texts, spec, pretrain_steps, seed, progress) if pretrain_steps else []
    model.save_pretrained(dest)
    model.generation_config.save_pretrained(dest)
    record = {"spec": asdict(spec), "seed": seed, "pretrain_steps": pretrain_steps, "vocab": len(tokenizer),
              "initial_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None}
    (dest / "strata_kit.json").write_text(json.dumps(record, indent=2))


def _train_tokenizer(dest: Path, texts: list[str], vocab: int, seed: int):
    """Train a byte-fallback BPE SentencePiece model; load it through transformers so HF files are written too."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    lines = [line for text in texts for line in text.splitlines() if line.strip()]
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, split_digits=True, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, num_threads=1, hard_vocab_limit=False, minloglevel=2,
    )
    (dest / "tokenizer.model").write_bytes(model.getvalue())
    (dest / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "legacy": False,
    }))
    tokenizer = AutoTokenizer.from_pretrained(dest)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(dest)
    return tokenizer


def _pretrain(model, tokenizer, texts: list[str], spec: TinySpec, steps: int, seed: int, progress: bool) -> list[float]:
    """A short causal-LM run over packed corpus blocks so the model's text is not noise."""
    import torch
    from tqdm.auto import tqdm

    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    if len(ids) < spec.block + 1:
        raise StrataError(f"the corpus has {len(ids)} tokens; pre-training needs at least {spec.block + 1}")
    starts = list(range(0, len(ids) - spec.block, spec.block // 2))
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    losses = []
    bar = tqdm(range(steps), desc="pre-training tiny base", disable=not progress)
    for _ in bar:
        batch = torch.tensor([ids[s:s + spec.block] for s in rng.choices(starts, k=spec.batch)])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses
