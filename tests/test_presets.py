"""The preset loader: defaults + YAML + overrides, unknown keys and wrong types rejected with the key named."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from strata.errors import StrataError
from strata.presets import load_preset


@dataclass(frozen=True)
class Demo:
    r: int = 8
    lr: float = 1e-4
    fmt: Literal["text", "chat"] = "text"
    targets: list[str] = field(default_factory=lambda: ["q_proj"])
    topic: str | None = None


def write(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_yaml_overrides_defaults_and_overrides_win(tmp_path):
    p = load_preset(Demo, write(tmp_path, "r: 16\nfmt: chat\ntargets: [q_proj, v_proj]\n"), lr=None, topic="ASC_Leases")
    assert p == Demo(r=16, lr=1e-4, fmt="chat", targets=["q_proj", "v_proj"], topic="ASC_Leases")


def test_empty_file_is_all_defaults(tmp_path):
    assert load_preset(Demo, write(tmp_path, "")) == Demo()


@pytest.mark.parametrize("text, needle", [
    ("rank: 4\n", "unknown key(s) ['rank']"),
    ("r: four\n", "r must be int"),
    ("r: true\n", "r must be int"),
    ("fmt: json\n", "fmt must be one of 'text', 'chat'"),
    ("targets: q_proj\n", "targets must be"),
    ("- 1\n- 2\n", "must be a mapping"),
    ("r: [1\n", "not valid YAML"),
])
def test_bad_presets_name_the_problem(tmp_path, text, needle):
    with pytest.raises(StrataError, match="p.yaml") as info:
        load_preset(Demo, write(tmp_path, text))
    assert needle in str(info.value)


def test_missing_preset_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATA_PRESETS", str(tmp_path))
    with pytest.raises(StrataError, match="not found"):
        load_preset(Demo, "levels/nope")


def test_synthesis_gate_and_topic_presets_load():
    from strata.data.synthesis import SynthesisPreset
    from strata.qa.gate import GatePreset
    from strata.qa.prompts import load_prompt_set
    from strata.train.pairs import GENERAL, GeneralMix, chat_record, general_records
    from strata.train.trainconfig import load_train_preset

    assert load_preset(SynthesisPreset, "synthesis").generator == "auto"
    gate = load_preset(GatePreset, "gate")
    assert gate.metric == gate.general_metric == "answer_perplexity" and 0 < gate.min_gain < 1 and gate.max_f1_loss > 0
    topic = load_train_preset(0, "levels/topic")
    assert topic.format == "chat" and topic.min_steps >= 1 and topic.step_tokens and topic.warmup_ratio > 0
    assert load_train_preset(2).general_share > 0
    assert all(p.get("question") and p.get("answer") for p in load_preset(GeneralMix, GENERAL).pairs)
    assert len(general_records(20, topic.phrasings)) == 20
    assert all(item.reference for item in load_prompt_set("qa/general").items)
    pair = {"id": "x", "question": "What is a lease?", "answer": "A contract.", "section": "Scope"}
    prompts = {chat_record(dict(pair, id=str(i)), topic.phrasings)["messages"][0]["content"] for i in range(40)}
    assert len(prompts) > 2 and all("What is a lease?" in p for p in prompts)  # varied phrasings, same question
