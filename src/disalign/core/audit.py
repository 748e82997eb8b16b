"""The edit audit: which weights an attack changed, and by how much.

`edit_audit(original, edited, targets)` compares every parameter of two models of the same
architecture (full models, or `edited` a PEFT LoRA model over the original's weights, whose change
is each adapted layer's B·A·scaling) and returns:

    changed            number of weights (parameters) that changed, of `compared`
    no_weight_changed  True when none did: reported, not an error (an attack that trained nothing)
    by_type            per module type (the module's own name: q_proj, down_proj, embed_tokens; a
                       bias is `q_proj.bias`): `changed` and `of` (how many of that type), the
                       relative Frobenius norm ‖W′ − W‖ / ‖W‖ `max` and `mean` over its changed
                       weights, and `per_layer` ({layer index: relative norm} of the changed ones;
                       a weight outside the layers, such as the embedding, under its own name)
    targets            the module types the method means to edit: given, else a LoRA adapter's
                       target modules, else None (every type)
    untouched_targets  weights of a targeted type that did not change, by full name: what an edit
                       that silently skips modules (the experts of a mixture-of-experts layer, a
                       layer range) leaves behind

A weight counts as changed when its relative norm exceeds CHANGED_ABOVE, so that a save and load
in the same precision (exact) reads as unchanged and any training step does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch

CHANGED_ABOVE = 1e-7
_LAYER = re.compile(r"\.(\d+)\.")


def edit_audit(original, edited, targets: Sequence[str] | None = None) -> dict[str, Any]:
    """The audit of `edited` against `original` (see the module's docstring)."""
    before = dict(original.named_parameters())
    if targets is None and _is_peft(edited):
        targets = _lora_targets(edited)
    changes = dict(_lora_changes(edited)) if _is_peft(edited) else dict(_full_changes(before, edited))
    by_type: dict[str, dict[str, Any]] = {}
    untouched = []
    for name, weight in before.items():
        kind = module_type(name)
        entry = by_type.setdefault(kind, {"changed": 0, "of": 0, "per_layer": {}})
        entry["of"] += 1
        relative = changes.get(name, 0.0) / max(float(weight.detach().float().norm()), 1e-12)
        if relative > CHANGED_ABOVE:
            entry["changed"] += 1
            layer = layer_of(name)
            entry["per_layer"][name if layer is None else str(layer)] = relative
        elif targets is None or kind in targets:
            untouched.append(name)
    for entry in by_type.values():
        norms = list(entry["per_layer"].values())
        entry["max"] = max(norms) if norms else 0.0
        entry["mean"] = sum(norms) / len(norms) if norms else 0.0
    changed = sum(entry["changed"] for entry in by_type.values())
    return {
        "changed": changed,
        "compared": len(before),
        "no_weight_changed": changed == 0,
        "by_type": {kind: by_type[kind] for kind in sorted(by_type)},
        "targets": None if targets is None else sorted(targets),
        "untouched_targets": untouched,
    }


def module_type(name: str) -> str:
    """`model.layers.3.self_attn.q_proj.weight` → `q_proj`; a parameter other than `weight` keeps its
    own name beside the module's (`q_proj.bias`)."""
    module, _, parameter = name.rpartition(".")
    kind = module.rpartition(".")[2] if module else parameter
    return kind if parameter == "weight" or not module else f"{kind}.{parameter}"


def layer_of(name: str) -> int | None:
    """The index of the layer a parameter belongs to (its first numbered path part), None outside layers."""
    found = _LAYER.search(f".{name}.")
    return int(found.group(1)) if found else None


def summary_table(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per module type that changed, or a single row saying that no weight changed."""
    if audit["no_weight_changed"]:
        return [{"module": "no weight changed", "changed": f"0 of {audit['compared']}", "max": None, "mean": None}]
    return [
        {"module": kind, "changed": f"{entry['changed']} of {entry['of']}", "max": entry["max"], "mean": entry["mean"]}
        for kind, entry in audit["by_type"].items()
        if entry["changed"]
    ]


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config")


def _lora_targets(edited) -> list[str] | None:
    """The module names an adapter's config targets (None for a pattern such as `all-linear`)."""
    names: set[str] = set()
    for adapter in edited.active_adapters:
        configured = edited.peft_config[adapter].target_modules
        if isinstance(configured, str):
            return None
        names |= set(configured)
    return sorted(names)


@torch.no_grad()
def _full_changes(before: dict[str, torch.Tensor], edited) -> Iterable[tuple[str, float]]:
    after = dict(edited.named_parameters())
    if set(after) != set(before):
        missing = sorted(set(before) ^ set(after))[:3]
        raise ValueError(f"the edited model's parameters are not the original's (first differences: {missing})")
    for name, weight in before.items():
        if after[name].shape != weight.shape:
            raise ValueError(f"{name}: shape {tuple(after[name].shape)} against {tuple(weight.shape)}")
        yield name, float((after[name].detach().float().cpu() - weight.detach().float().cpu()).norm())


@torch.no_grad()
def _lora_changes(edited) -> Iterable[tuple[str, float]]:
    """‖B·A·scaling‖ of every LoRA-adapted layer, under the name its base weight has in the original."""
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    for name, module in edited.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        deltas = [module.get_delta_weight(adapter).float() for adapter in module.active_adapters]
        yield f"{name.removeprefix(prefix)}.weight", float(sum(deltas).norm()) if deltas else 0.0
