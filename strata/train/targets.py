"""LoRA target modules by role (attention, mlp, all-linear), mapped onto each architecture's real module names."""

from __future__ import annotations

from collections import Counter
from typing import Any

from strata.errors import StrataError

ALL_LINEAR = "all-linear"  # PEFT's own spelling: every linear layer except the output head
# role -> the module-name sets families use, in order of preference; the first set the model has in full is used.
# A name matches a module whose dotted path ends with it (PEFT's rule), so "attn.c_proj" picks GPT-2's attention
# projection and not its MLP's.
ROLES: dict[str, list[list[str]]] = {
    "attention": [
        ["q_proj", "k_proj", "v_proj", "o_proj"],  # Llama, Mistral, Qwen2, Gemma, Starcoder2, OLMo, ...
        ["qkv_proj", "o_proj"],  # Phi-3 (fused q, k, v)
        ["q_proj", "k_proj", "v_proj", "dense"],  # Phi-1/2
        ["query_key_value", "dense"],  # GPT-NeoX, Falcon, BLOOM
        ["c_attn", "attn.c_proj"],  # GPT-2, StarCoder
        ["Wqkv", "out_proj"],  # MPT
    ],
    "mlp": [
        ["gate_proj", "up_proj", "down_proj"],  # Llama, Mistral, Qwen2, Gemma, ...
        ["gate_up_proj", "down_proj"],  # Phi-3 (fused gate and up)
        ["fc1", "fc2"],  # Phi-1/2
        ["dense_h_to_4h", "dense_4h_to_h"],  # GPT-NeoX, Falcon, BLOOM
        ["c_fc", "mlp.c_proj"],  # GPT-2, StarCoder, Starcoder2
        ["up_proj", "down_proj"],  # Nemotron (no gate)
    ],
}


def linear_modules(model: Any) -> list[str]:
    """Dotted names of the model's linear layers (torch Linear, its quantized subclasses, transformers' Conv1D)."""
    import torch

    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"]


def _matches(target: str, names: list[str]) -> list[str]:
    return [n for n in names if n == target or n.endswith("." + target)]


def _inventory(names: list[str]) -> str:
    """`q_proj x2, k_proj x2, ..., lm_head`: the model's linear layers by short name, in model order."""
    counts = Counter(n.rsplit(".", 1)[-1] for n in names)
    return ", ".join(f"{leaf} x{count}" if count > 1 else leaf for leaf, count in counts.items())


def resolve_targets(model: Any, requested: list[str] | str) -> list[str] | str:
    """Preset target_modules -> what PEFT gets: roles become this architecture's module names, explicit names are
    kept, `all-linear` passes through as PEFT's own. Any name or role the model lacks is a StrataError that lists
    the model's linear layers."""
    requested = [requested] if isinstance(requested, str) else list(requested)
    names = linear_modules(model)
    arch = type(model).__name__
    hint = (f"{arch}'s linear layers are: {_inventory(names)}. Name them in the preset's target_modules, or use the "
            f"roles {', '.join([*ROLES, ALL_LINEAR])}.")
    if not requested:
        raise StrataError(f"the preset's target_modules is empty; {hint}")
    resolved: list[str] = []
    missing: list[str] = []
    for item in requested:
        if item == ALL_LINEAR:
            continue
        if item in ROLES:
            found = next((group for group in ROLES[item] if all(_matches(t, names) for t in group)), None)
            if found is None:
                known = "; ".join("+".join(group) for group in ROLES[item])
                raise StrataError(f"target_modules role {item!r} fits none of the layouts strata knows ({known}). "
                                  f"{hint}")
            resolved += found
        elif _matches(item, names):
            resolved.append(item)
        else:
            missing.append(item)
    if missing:
        raise StrataError(f"target_modules names {', '.join(missing)}, which {arch} does not have. {hint}")
    return ALL_LINEAR if ALL_LINEAR in requested else list(dict.fromkeys(resolved))


def wrapped_summary(peft_model: Any, requested: list[str] | str, resolved: list[str] | str) -> dict[str, Any]:
    """What PEFT actually wrapped: per short module name, how many layers and how many adapter parameters."""
    from peft.tuners.lora import LoraLayer

    per: dict[str, dict[str, int]] = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer):
            entry = per.setdefault(name.rsplit(".", 1)[-1], {"layers": 0, "params": 0})
            entry["layers"] += 1
            entry["params"] += sum(p.numel() for n, p in module.named_parameters() if n.startswith("lora_"))
    return {"requested": [requested] if isinstance(requested, str) else list(requested), "resolved": resolved,
            "wrapped": per, "layers": sum(e["layers"] for e in per.values()),
            "params": sum(e["params"] for e in per.values())}


def describe(summary: dict[str, Any]) -> str:
    """One line for the plan: `qkv_proj+o_proj (4 layers, 24,576 params)`."""
    return f"{'+'.join(summary['wrapped'])} ({summary['layers']} layers, {summary['params']:,} params)"


def wrap_lora(model: Any, cfg: Any, use_dora: bool = False) -> tuple[Any, dict[str, Any]]:
    """Wrap `model` with a fresh LoRA/DoRA from the training preset `cfg` (r, alpha, dropout, target_modules);
    returns (peft model, wrapped_summary)."""
    from peft import LoraConfig, get_peft_model

    resolved = resolve_targets(model, cfg.target_modules)
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=resolved,
                      use_dora=use_dora, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    return peft_model, wrapped_summary(peft_model, cfg.target_modules, resolved)
