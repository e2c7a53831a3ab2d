"""The tiny base: loads with transformers, tokenizer round-trips, K-quant friendly, deterministic."""

from __future__ import annotations

import json

from strata.kit.texts import corpus_texts
from strata.kit.tiny_base import SPECS, make_tiny_base


def test_tiny_base_loads_and_tokenizer_round_trips(tiny_base):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    text = "The lessee recognises a right-of-use asset and a lease liability of $1,250."
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
    config = AutoConfig.from_pretrained(tiny_base)
    assert config.model_type == "llama"
    assert config.hidden_size % 256 == 0 and config.intermediate_size % 256 == 0
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    assert model.get_input_embeddings().num_embeddings == len(tok)
    assert (tiny_base / "tokenizer.model").is_file()
    rendered = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert rendered == "<s>[INST] Hi [/INST]"


def test_pretraining_lowers_loss(tiny_base):
    record = json.loads((tiny_base / "strata_kit.json").read_text())
    import math

    assert record["final_loss"] < 0.8 * record["initial_loss"]  # pre-training really learned the corpus
    assert record["final_loss"] < math.log(record["vocab"])  # and beats uniform guessing


def test_same_seed_same_weights(tmp_path):
    from safetensors.numpy import load_file

    texts = corpus_texts()
    a = make_tiny_base(tmp_path / "a", texts, SPECS["test"], pretrain_steps=3, seed=7)
    b = make_tiny_base(tmp_path / "b", texts, SPECS["test"], pretrain_steps=3, seed=7)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all((wa[k] == wb[k]).all() for k in wa)
    assert (a / "tokenizer.model").read_bytes() == (b / "tokenizer.model").read_bytes()
