"""Preference layers: DPO through TRL on {prompt, chosen, rejected} rows, exported to adapter.gguf, judged on the GGUF."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from strata.errors import StrataError

PAIRS = [  # (prompt, chosen, rejected): the corpus's facts against plausible wrong answers
    ("What does a lessee recognise at lease commencement?",
     "A right-of-use asset and a lease liability.", "Only an expense when each payment is made."),
    ("When is revenue recognised?",
     "When a performance obligation is satisfied by transferring control.", "When the invoice is printed."),
    ("How is an intangible asset with a finite life treated?",
     "It is amortised over its useful life.", "It is never amortised or tested."),
    ("What is a performance obligation?",
     "A promise to transfer a distinct good or service.", "A tax owed to the government."),
]
FAST_DPO = {"max_seq_len": 96, "batch_size": 2, "grad_accum": 1, "max_steps": 16, "lr": 5e-3, "save_steps": 1000}


def write_prefs(path: Path) -> Path:
    """The console arena's export shape: prompt/chosen/rejected plus extra keys (topic, votes)."""
    rows = [{"prompt": p, "chosen": c, "rejected": r, "topic": "ASC_Leases", "votes": 3} for p, c, r in PAIRS]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def completion_logprob(logits: np.ndarray, tokens: list[int], start: int) -> float:
    """Sum of log p(token i | tokens < i) for i >= start, from logits [n, vocab] of the whole sequence."""
    rows = logits[start - 1:-1].astype(np.float64)
    rows = rows - rows.max(axis=1, keepdims=True)
    logp = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
    return float(sum(logp[i, t] for i, t in enumerate(tokens[start:])))


def chat_tokens(tokenizer, prompt: str, answer: str) -> tuple[list[int], int]:
    """The pair rendered as the server's chat does (and TRL trains it): tokens, and where the answer starts."""
    head = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"]
    full = tokenizer.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                                         tokenize=True, return_dict=True)["input_ids"]
    start = next((i for i, (a, b) in enumerate(zip(head, full)) if a != b), len(head))
    return list(full), start


def gguf_margins(gguf: Path, tokenizer, lora: list) -> list[float]:
    """log p(chosen) - log p(rejected) for each training prompt, on llama.cpp with the given GGUF LoRAs."""
    from strata.export.fidelity import gguf_logits

    margins = []
    for prompt, chosen, rejected in PAIRS:
        values = []
        for answer in (chosen, rejected):
            tokens, start = chat_tokens(tokenizer, prompt, answer)
            values.append(completion_logprob(gguf_logits(gguf, tokens, lora=lora, n_threads=1), tokens, start))
        margins.append(values[0] - values[1])
    return margins


def test_dpo_layer_moves_the_served_gguf_toward_chosen(ws, base_gguf, tmp_path):
    from transformers import AutoTokenizer

    from strata.train.preferences import train_preferences

    prefs = write_prefs(tmp_path / "prefs.jsonl")
    out = train_preferences(ws, 1, prefs, overrides=FAST_DPO, progress=False)
    assert out == ws.peft / "level1"
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["method"] == "dpo" and summary["metrics"]["steps"] == 16
    assert summary["dataset"]["train"] == str(prefs) and summary["dataset"]["records"] == len(PAIRS)
    assert summary["training_arguments"]["beta"] == pytest.approx(0.1)
    assert summary["metrics"]["reward_accuracy_last"] > 0.5
    log = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert len([r for r in log if "loss" in r]) == 16 and all("reward_margin" in r for r in log if "loss" in r)
    assert (out / "loss.png").stat().st_size > 0 and not (out / "ref").exists()  # TRL's reference copy is not shipped

    tokenizer = AutoTokenizer.from_pretrained(ws.base_model)
    before = gguf_margins(base_gguf, tokenizer, [])
    after = gguf_margins(base_gguf, tokenizer, [(out / "adapter.gguf", 1.0)])
    gains = [a - b for a, b in zip(after, before)]
    assert min(gains) > 0.5 and np.mean(gains) > 2.0, (before, after)  # nats, on the served GGUF

    # the GGUF serves what PEFT trained: the HF margin with the adapter matches llama.cpp's
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ws.base_model, dtype=torch.float32), out)
    tokens, start = chat_tokens(tokenizer, *PAIRS[0][:2])
    with torch.no_grad():
        hf = model(torch.tensor([tokens])).logits[0].numpy()
    from strata.export.fidelity import gguf_logits

    served = gguf_logits(base_gguf, tokens, lora=[(out / "adapter.gguf", 1.0)], n_threads=1)
    assert completion_logprob(served, tokens, start) == pytest.approx(completion_logprob(hf, tokens, start), abs=0.05)


def test_cli_trains_a_preference_level_on_the_levels_below(trained, tmp_path):
    import shutil

    from strata.cli import main as cli
    from strata.settings import Settings

    settings = Settings.resolve(workspace=tmp_path / "ws", base_model=trained.base_model, n_threads=1)
    shutil.copytree(trained.workspace, settings.workspace, dirs_exist_ok=True)  # resolve() made the folder
    prefs = write_prefs(tmp_path / "prefs.jsonl")
    result = CliRunner().invoke(cli, ["build", "train", "--workspace", str(settings.workspace), "--level", "3",
                                      "--preferences", str(prefs), "--max-steps", "2", "--no-progress"],
                                env={"BASE_MODEL": trained.base_model, "N_THREADS": "1"})
    assert result.exit_code == 0, result.output
    summary = json.loads((settings.peft / "level3" / "training_summary.json").read_text())
    assert summary["method"] == "dpo" and [d["name"] for d in summary["levels_below"]] == ["level1", "level2"]
    assert summary["metrics"]["steps"] == 2 and (settings.peft / "level3" / "adapter.gguf").stat().st_size > 0


@pytest.mark.parametrize("row, needle", [
    ({"prompt": "q", "chosen": "a"}, "missing ['rejected'], found keys ['chosen', 'prompt']"),
    ({"question": "q", "answer": "a"}, "found keys ['answer', 'question']"),
    ({"prompt": "q", "chosen": "a", "rejected": 3}, "`rejected` must be non-empty strings"),
    ({"prompt": "q", "chosen": "a", "rejected": "a"}, "the same text"),
])
def test_bad_preference_row_is_a_one_line_error(tmp_path, row, needle):
    from strata.train.preferences import read_preferences

    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n\n" + json.dumps(row) + "\n")
    with pytest.raises(StrataError) as info:
        read_preferences(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ") and needle in message and "\n" not in message
