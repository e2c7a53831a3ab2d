"""Training parts without a training run: presets, packing and chat masks, fingerprints, base-model resolution."""

from __future__ import annotations

import json
import shutil

import pytest

from strata.errors import StrataError
from strata.modelfolder import fingerprint, resolve_base_model
from strata.presets import presets_dir
from strata.train import batches
from strata.train.trainconfig import TrainPreset, load_train_preset


@pytest.mark.parametrize("path", sorted((presets_dir() / "levels").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_level_preset_loads(path):
    preset = load_train_preset(1, str(path))
    assert isinstance(preset, TrainPreset) and preset.r > 0 and preset.target_modules


def test_level_presets_differ_as_designed():
    one, two, three = (load_train_preset(n) for n in (1, 2, 3))
    assert one.format == "text" and one.target_modules == ["attention"]
    assert two.format == "chat" and two.target_modules == ["attention", "mlp"]
    assert three.r > two.r > one.r
    assert load_train_preset(1, epochs=0.5).epochs == 0.5


def test_unknown_preset_key_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rank: 8\n")
    with pytest.raises(StrataError, match=r"unknown key\(s\) \['rank'\]"):
        load_train_preset(1, str(bad))


def test_text_blocks_are_one_per_text_and_keep_every_token(tiny_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    records = [{"id": str(i), "text": f"Lease number {i} is an operating lease. " * (i + 1)} for i in range(6)]
    blocks = batches.build_blocks(records, tokenizer, "text", 32)
    stream = [t for r in records for t in tokenizer(r["text"])["input_ids"] + [tokenizer.eos_token_id]]
    assert [t for b in blocks for t in b.input_ids] == stream
    assert all(len(b.input_ids) <= 32 for b in blocks) and all(b.labels == b.input_ids for b in blocks)
    starts = [b.input_ids[0] for b in blocks].count(tokenizer.bos_token_id)
    assert starts == len(records)  # every text starts its own block: no block holds the end of one and the next


def test_flattened_batches_keep_examples_apart(tiny_base):
    """DataCollatorWithFlattening packs a batch into one row; the position-id resets must give each example exactly
    the logits it gets alone (so packed examples never attend to each other)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorWithFlattening

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32, attn_implementation="sdpa").eval()
    texts = ["A lease conveys the right to control an identified asset.", "Goodwill is tested for impairment."]
    blocks = batches.build_blocks([{"id": str(i), "text": t} for i, t in enumerate(texts)], tokenizer, "text", 64)
    batch = DataCollatorWithFlattening()([{"input_ids": b.input_ids, "labels": b.labels} for b in blocks])
    with torch.no_grad():
        # use_cache=False as in training (strata turns the cache off): transformers only reads packing without one
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone = model(input_ids=torch.tensor([blocks[1].input_ids])).logits[0]
        shifted = model(input_ids=batch["input_ids"], use_cache=False).logits[0]  # without the resets the second text sees the first
    second = packed[len(blocks[0].input_ids):]
    assert torch.allclose(second, alone, atol=1e-4)
    assert not torch.allclose(shifted[len(blocks[0].input_ids):], alone, atol=1e-2)


def test_chat_labels_cover_only_the_answer(tiny_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    records = [{"id": str(i), "messages": [{"role": "user", "content": f"What is lease {i}?"},
                                           {"role": "assistant", "content": f"Lease {i} conveys control of an asset."}]}
               for i in range(5)]
    blocks = batches.build_blocks(records, tokenizer, "chat", 128)
    assert len(blocks) == len(records)  # one conversation per block; the collator packs them apart
    for block in blocks:
        assert len(block.input_ids) <= 128
        answers = tokenizer.decode([t for t, l in zip(block.input_ids, block.labels) if l != batches.IGNORE])
        assert "conveys control" in answers and "What is" not in answers and "[INST]" not in answers
    everything = tokenizer.decode(blocks[0].input_ids)
    assert "[INST] What is lease 0? [/INST]" in everything


def test_chat_levels_with_chunks_train_on_text_rows_too(tiny_base):
    """`with_chunks`: a chat level's text rows (its topics' chunks) become text blocks with loss on every token, beside
    the conversations' answer-only blocks."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    chats = [{"id": "q", "messages": [{"role": "user", "content": "What is a lease?"},
                                      {"role": "assistant", "content": "A lease conveys control of an asset."}]}]
    texts = [{"id": "c", "text": "A lessee recognizes a right-of-use asset and a lease liability."}]
    blocks = batches.build_blocks(chats + texts, tokenizer, "chat", 128)
    assert len(blocks) == 2
    text_block = next(b for b in blocks if b.labels == b.input_ids)
    assert text_block.input_ids == tokenizer(texts[0]["text"])["input_ids"] + [tokenizer.eos_token_id]
    chat_block = next(b for b in blocks if b is not text_block)
    assert batches.IGNORE in chat_block.labels
    with pytest.raises(StrataError, match="has no `messages`"):  # a row with neither is still refused
        batches.build_blocks([{"id": "x", "prompt": "only a prompt"}], tokenizer, "chat", 128)


def test_permuted_chunks_keep_every_sentence_in_other_orders():
    """`permutations`: each chunk of several sentences adds that many plain text rows holding exactly its sentences,
    reordered the same way on every run; a one-sentence chunk adds none."""
    from collections import Counter

    from strata.train.pairs import permuted

    text = ("A lessee classifies each lease at commencement. Classification matters because it sets the expense "
            "pattern.\n\nBoth categories place a right-of-use asset on the balance sheet. Lessors do not reassess "
            "the term. The practical consequence is a larger lease liability.")
    chunks = [{"id": "leases-1", "topic": "ASC_Leases", "text": text, "messages": []},
              {"id": "leases-2", "topic": "ASC_Leases", "text": "Only one sentence here."}]
    rows = permuted(chunks, 3)
    assert [r["id"] for r in rows] == [f"leases-1-permuted-{i}" for i in range(3)]
    assert all("messages" not in r and r["topic"] == "ASC_Leases" and r["chunk_id"] == "leases-1" for r in rows)
    for row in rows:  # the same words, none lost or repeated, whole sentences moved (each ends a sentence)
        assert Counter(row["text"].split()) == Counter(text.split()) and row["text"].endswith(".")
        assert "The practical consequence is a larger lease liability." in row["text"]
    assert len({r["text"] for r in rows} | {" ".join(text.split())}) > 1  # reordered
    assert permuted(chunks, 3) == rows and permuted(chunks, 0) == []


def test_planned_steps_follow_the_trainers_count():
    from strata.train.trainargs import planned_steps

    cfg = TrainPreset(batch_size=2, grad_accum=2, epochs=1.0)
    assert planned_steps(10, cfg) == 3  # 5 micro-batches -> 3 optimiser steps (the last one short)
    assert planned_steps(10, cfg, world_size=2) == 2
    assert planned_steps(10, TrainPreset(batch_size=2, grad_accum=2, epochs=2.5)) == 8
    assert planned_steps(10, TrainPreset(max_steps=7)) == 7
    budget = TrainPreset(step_tokens=1000, epochs=3.0, min_steps=5, max_steps=40)
    assert planned_steps(10, budget, tokens=5000) == 15  # 3 epochs x 5000 tokens / 1000 tokens per step
    assert planned_steps(10, budget, tokens=500) == 5  # the floor: a small topic still gets min_steps
    assert planned_steps(10, budget, tokens=50000) == 40  # the cap
    with pytest.raises(StrataError, match="no training blocks"):
        planned_steps(0, cfg)


def test_fingerprint_is_stable_and_sees_weights(tiny_base, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_base, copy)
    assert fingerprint(copy) == fingerprint(tiny_base)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # one weight byte near the end (the last sampled chunk)
    weights.write_bytes(bytes(data))
    assert fingerprint(copy) != fingerprint(tiny_base)
    with pytest.raises(StrataError, match="no config.json"):
        fingerprint(tmp_path)


def test_base_model_dir_and_hub_id_resolution(workspace, tiny_base, monkeypatch):
    assert resolve_base_model(workspace, str(tiny_base)) == tiny_base
    with pytest.raises(StrataError, match="not found. Set BASE_MODEL or --base-model"):
        resolve_base_model(workspace, str(tiny_base.parent / "nope"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(StrataError, match="hub access is off.*Place the model by hand.*huggingface-cli download"):
        resolve_base_model(workspace, "mistralai/Mistral-7B-Instruct-v0.2")
    assert not (workspace.models / "Mistral-7B-Instruct-v0.2").exists()


def test_hub_model_is_fetched_once_into_models(workspace, tiny_base, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot(repo_id, local_dir, token=None, ignore_patterns=None):  # stands in for the network only
        calls.append((repo_id, token))
        shutil.copytree(tiny_base, local_dir, dirs_exist_ok=True)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for _ in range(2):
        path = resolve_base_model(workspace, "kit/tiny-llama")
    assert path == workspace.models / "tiny-llama" and (path / "config.json").is_file()
    assert calls == [("kit/tiny-llama", "hf_test")]
    assert json.loads((path / "config.json").read_text()) == json.loads((tiny_base / "config.json").read_text())
