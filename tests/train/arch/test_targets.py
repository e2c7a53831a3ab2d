"""Preset target_modules by role: each family's real module names (Phi-3's fused ones included), PEFT's all-linear,
explicit names, a clear error listing the model's linear layers, and the wrapped modules in the plan."""

from __future__ import annotations

import re

import pytest

from strata.errors import StrataError
from strata.train.targets import linear_modules, resolve_targets, wrap_lora
from strata.train.trainconfig import TrainPreset


@pytest.fixture(scope="module")
def models(family_base):
    """name -> the family's tiny base loaded in transformers (read-only)."""
    from transformers import AutoModelForCausalLM

    return {name: AutoModelForCausalLM.from_pretrained(family_base(name)) for name in ("phi3", "llama-tied", "opt")}


@pytest.mark.parametrize("family, role, names", [
    ("llama-tied", ["attention"], ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ("llama-tied", ["attention", "mlp"], ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    ("phi3", ["attention"], ["qkv_proj", "o_proj"]),
    ("phi3", ["mlp"], ["gate_up_proj", "down_proj"]),
    ("phi3", ["attention", "o_proj"], ["qkv_proj", "o_proj"]),  # roles and explicit names mix, once each
    ("opt", ["mlp"], ["fc1", "fc2"]),
    ("llama-tied", ["q_proj", "v_proj"], ["q_proj", "v_proj"]),
    ("phi3", ["all-linear"], "all-linear"),
])
def test_roles_become_the_architectures_module_names(models, family, role, names):
    assert resolve_targets(models[family], role) == names


@pytest.mark.parametrize("family, targets, needle", [
    ("phi3", ["q_proj", "k_proj", "v_proj", "o_proj"], "names q_proj, k_proj, v_proj, which Phi3ForCausalLM does not have"),
    ("opt", ["attention"], "role 'attention' fits none of the layouts strata knows"),
])
def test_names_the_model_lacks_list_its_linear_layers(models, family, targets, needle):
    with pytest.raises(StrataError) as info:
        resolve_targets(models[family], targets)
    message = str(info.value)
    assert needle in message
    listed = re.search(r"linear layers are: (.*?)\. Name them", message).group(1)
    leaves = {n.rsplit(".", 1)[-1] for n in linear_modules(models[family])}
    assert {item.split(" x")[0] for item in listed.split(", ")} == leaves


def test_all_linear_wraps_every_linear_layer_but_the_head(models):
    import copy

    peft_model, summary = wrap_lora(copy.deepcopy(models["phi3"]), TrainPreset(r=4, target_modules=["all-linear"]))
    assert summary["resolved"] == "all-linear"
    assert set(summary["wrapped"]) == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    assert summary["params"] == peft_model.get_nb_trainable_parameters()[0]


def test_plan_and_summary_show_the_modules_actually_wrapped(on_family, train1, models, capsys):
    """Phi-3 fuses q/k/v and gate/up: the plan names qkv_proj+o_proj and the parameters LoRA really adds there."""
    settings = on_family("phi3")
    train1(settings, dry_run=True)
    line = next(line for line in capsys.readouterr().out.splitlines() if "trainable" in line)  # the plan line
    modules = {name: module for name, module in models["phi3"].named_modules()
               if name.rsplit(".", 1)[-1] in ("qkv_proj", "o_proj")}
    params = sum(8 * (m.in_features + m.out_features) for m in modules.values())  # level 1: r=8
    assert f"r=8, o_proj+qkv_proj ({len(modules)} layers, {params:,} params)" in line, line
    assert not (settings.peft / "level1").exists()


def test_preset_naming_absent_modules_stops_before_training(on_family, train1):
    settings = on_family("phi3")
    with pytest.raises(StrataError, match="qkv_proj x2, gate_up_proj x2, down_proj x2, lm_head"):
        train1(settings, overrides={"target_modules": ["q_proj", "v_proj"]})
    assert not (settings.peft / "level1").exists()
