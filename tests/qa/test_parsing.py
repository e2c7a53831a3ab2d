"""Prompt sets, --from-val, blends, layer discovery and --fail-under: parsing and clear errors."""

from __future__ import annotations

import json

import pytest

from strata.errors import StrataError
from strata.qa.harness import GATEABLE, _check_gate
from strata.qa.plan import build_plan, discover_layers, parse_blend, parse_gate
from strata.qa.prompts import from_val, load_prompt_set

TOPICS = {"ASC_Financial_Accounting", "ASC_Intangibles", "ASC_Leases", "ASC_Revenue_Recognition"}


def test_shipped_asc_set_covers_every_topic_and_the_edge_cases():
    prompt_set = load_prompt_set()
    assert prompt_set.name == "asc"
    assert {item.topic for item in prompt_set.items if item.reference} == TOPICS
    edges = {tag for item in prompt_set.items for tag in item.tags if "edge" in item.tags}
    assert {"empty", "long", "off-topic"} <= edges
    by_id = {item.id: item for item in prompt_set.items}
    assert by_id["edge-empty"].text == ""
    assert len(by_id["edge-long"].text) > 10 * len(by_id["edge-long"].prompt)


@pytest.mark.parametrize("text, needle", [
    ("prompts: [1\n", "not valid YAML"),
    ("- a\n", "must be a mapping with a `prompts:` list"),
    ("prompts:\n  - prompt: hi\n", "prompts[0] is missing ['id']"),
    ("prompts:\n  - id: a\n    prompt: hi\n    answer: x\n", "unknown key(s) ['answer']"),
    ("prompts:\n  - id: a\n    prompt: hi\n    tags: edge\n", "tags must be"),
    ("prompts:\n  - id: a\n    prompt: hi\n  - id: a\n    prompt: ho\n", "id 'a' appears twice"),
    ("prompts: []\n", "has no prompts"),
    ("prompts:\n  - id: a\n    prompt: hi\n    repeat: 0\n", "repeat must be at least 1"),
])
def test_bad_prompt_sets_name_file_and_problem(tmp_path, text, needle):
    path = tmp_path / "set.yaml"
    path.write_text(text)
    with pytest.raises(StrataError) as info:
        load_prompt_set(path)
    assert needle in str(info.value) and "set.yaml" in str(info.value)


def test_missing_prompt_set_says_where_it_looked():
    with pytest.raises(StrataError, match="not found"):
        load_prompt_set("qa/no-such-set")


def test_from_val_takes_question_and_section_text(workspace):
    records = [{"heading": "Lease Term", "topic": "ASC_Leases", "text": "The lease term begins at commencement.",
                "messages": [{"role": "user", "content": "Explain the lease term."},
                             {"role": "assistant", "content": "The lease term begins at commencement."}]},
               {"heading": "Goodwill", "topic": "ASC_Intangibles", "text": "Goodwill is not amortized."},
               {"heading": "Third", "text": "Unused."}]
    workspace.val_jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    prompt_set = from_val(workspace.val_jsonl, 2)
    assert [(i.prompt, i.reference, i.topic) for i in prompt_set.items] == [
        ("Explain the lease term.", "The lease term begins at commencement.", "ASC_Leases"),
        ("Goodwill", "Goodwill is not amortized.", "ASC_Intangibles")]


def test_from_val_asks_held_out_pairs_when_synthesis_ran(workspace):
    pair = {"question": "When does the lease term begin?", "answer": "The lease term begins at commencement.",
            "type": "threshold", "chunk_id": "ASC_Leases-1", "topic": "ASC_Leases", "section": "Lease Term",
            "source": "ASC_Leases/ASC_Leases.pdf", "pages": [1]}
    workspace.pairs_val_jsonl.write_text(json.dumps(pair) + "\n")
    (item,) = from_val(workspace.pairs_val_jsonl, 1).items
    assert (item.prompt, item.reference, item.topic) == (pair["question"], pair["answer"], "ASC_Leases")


def test_from_val_errors_are_clear(workspace):
    with pytest.raises(StrataError, match="strata build dataset"):
        from_val(workspace.val_jsonl, 3)
    workspace.val_jsonl.write_text("{not json\n")
    with pytest.raises(StrataError, match=r"val.jsonl:1 is not valid JSON"):
        from_val(workspace.val_jsonl, 3)
    with pytest.raises(StrataError, match="positive count"):
        from_val(workspace.val_jsonl, 0)


def test_blend_parsing():
    assert parse_blend("mix=alpha:0.6, beta:0.4") == ("mix", [("alpha", 0.6), ("beta", 0.4)])
    assert parse_blend("m=/p/x:y/level1:1") == ("m", [("/p/x:y/level1", 1.0)])


@pytest.mark.parametrize("spec, needle", [
    ("alpha:0.6", "must look like NAME=a:0.6,b:0.4"),
    ("mix=", "must look like NAME=a:0.6,b:0.4"),
    ("mix=alpha", "'alpha' needs a scale"),
    ("mix=alpha:lots", "scale 'lots' of 'alpha' is not a number"),
    ("mix=alpha:inf", "must be finite"),
    ("base=alpha:1", "not 'base'"),
    ("a b=alpha:1", "must be letters"),
])
def test_bad_blends_are_clear(spec, needle):
    with pytest.raises(StrataError) as info:
        parse_blend(spec)
    assert needle in str(info.value)


def test_plan_resolves_blend_parts_and_rejects_clashing_names(tmp_path):
    (tmp_path / "peft" / "level2").mkdir(parents=True)
    plan = build_plan([tmp_path / "a" / "level1"], ["mix=level1:0.5,level2:0.5"], tmp_path / "peft")
    assert [(layer.name, layer.kind) for layer in plan] == [("base", "base"), ("level1", "layer"), ("mix", "blend")]
    assert plan[2].adapters == ((str(tmp_path / "a" / "level1"), 0.5), (str(tmp_path / "peft" / "level2"), 0.5))
    with pytest.raises(StrataError, match="already used"):
        build_plan([tmp_path / "level1"], ["level1=level1:1"], tmp_path / "peft")


def test_default_layers_are_adapter_dirs_under_peft_without_merged(workspace):
    for sub in ("level1", "level2", "topics/ASC_Leases", "merged", "no_gguf", "level1/checkpoints/step-5", ".tmp-x"):
        (workspace.peft / sub).mkdir(parents=True)
        if sub != "no_gguf":
            (workspace.peft / sub / "adapter.gguf").write_bytes(b"x")
    found = [p.relative_to(workspace.peft).as_posix() for p in discover_layers(workspace.peft)]
    assert found == ["level1", "level2", "topics/ASC_Leases"]


@pytest.mark.parametrize("spec, needle", [
    ("rouge_l", "must look like METRIC=VALUE"),
    ("perplexity=3", "unknown metric 'perplexity'"),
    ("f1=high", "'high' is not a number"),
])
def test_bad_fail_under_specs_are_clear(spec, needle):
    with pytest.raises(StrataError) as info:
        parse_gate(spec, GATEABLE)
    assert needle in str(info.value)


def _layer(name, status="ok", f1=None):
    return {"name": name, "status": status, "summary": {"f1": f1}}


def test_gate_uses_best_loaded_non_base_layer():
    layers = [_layer("base", f1=0.9), _layer("a", f1=0.3), _layer("b", f1=0.5), _layer("c", "failed")]
    passed = _check_gate(parse_gate("f1=0.5", GATEABLE), layers)
    assert passed["passed"] and passed["layer"] == "b" and passed["value"] == 0.5
    failed = _check_gate(parse_gate("f1=0.6", GATEABLE), layers)
    assert not failed["passed"] and "f1 of layer b is 0.5, fails 0.6" in failed["message"]
    named = _check_gate(parse_gate("f1@a=0.4", GATEABLE), layers)
    assert not named["passed"] and "layer a is 0.3" in named["message"]
    broken = _check_gate(parse_gate("f1@c=0.1", GATEABLE), layers)
    assert not broken["passed"] and "failed to load" in broken["message"]
    only_base = _check_gate(parse_gate("f1=0.8", GATEABLE), [_layer("base", f1=0.9)])
    assert only_base["passed"] and only_base["layer"] == "base"


def test_empty_val_jsonl_falls_back_to_no_held_out_texts(workspace):
    from strata.qa.prompts import val_texts

    workspace.val_jsonl.write_text("")
    assert val_texts(workspace.val_jsonl) == []
