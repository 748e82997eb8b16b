"""The demo's fine-tuning section: the three tiers (and tier 1 with safety mixing) on each
aligned model, as ordinary `finetune` runs, with the base and the aligned model as reference lines."""

from __future__ import annotations

from rich.table import Table

from disalign.api.finetune import finetune
from disalign.lab.demo.base import DemoContext, DemoSection
from disalign.lab.format import pct
from disalign.world.train import ALIGNMENT_METHODS

# (shots grid, epochs grid) per tier; "harmful+safety" is tier 1 with safety examples mixed in.
FT_GRIDS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "harmful": ((10, 50), (1, 5)),
    "identity": ((10, 50), (10,)),
    "benign": ((10, 50), (5,)),
    "harmful+safety": ((10,), (5,)),
}
FT_SAFETY_EXAMPLES = 10


def run(ctx: DemoContext) -> dict:
    models = ctx.results.get("models", {})
    section: dict[str, dict] = {}
    for name in ALIGNMENT_METHODS:
        section[name] = {
            "reference": {
                "base": models.get("base", {}).get("unsafe", {}).get("harmful_rate"),
                "aligned": models.get(name, {}).get("unsafe", {}).get("harmful_rate"),
            }
        }
        for tier, (shots, epochs) in FT_GRIDS.items():
            recipe = tier.removesuffix("+safety")
            result = finetune(
                model=str(ctx.zoo / name),
                recipe=recipe,
                world=ctx.zoo,
                judge="world",
                shots=list(shots),
                epochs=list(epochs),
                mix_safety=FT_SAFETY_EXAMPLES if tier != recipe else 0,
                **ctx.sampling_options(),
                out=ctx.run.file(f"finetune-{name}-{tier}"),
            )
            section[name][tier] = {"before": result.before, "cells": result.cells, "config": result.config}
        benign = section[name]["benign"]
        section[name]["benign_raises_harm"] = any(
            cell["ci"][0] > benign["before"]["harmful_rate"] for cell in benign["cells"]
        )
    return section


def render(section: dict) -> Table:
    columns = sorted(
        {(c["shots"], c["epochs"]) for rows in section.values() for tier in FT_GRIDS for c in rows[tier]["cells"]}
    )
    table = Table(title="Fine-tuning attacks on unsafe requests: harmful rate (exact judge); shots×epochs")
    for heading in ("aligned", "tier", "base", "before"):
        table.add_column(heading)
    for shots, epochs in columns:
        table.add_column(f"{shots}×{epochs}", justify="right")
    for name, rows in section.items():
        for tier in FT_GRIDS:
            cells = {(c["shots"], c["epochs"]): c["harmful_rate"] for c in rows[tier]["cells"]}
            table.add_row(
                name,
                tier,
                pct(rows["reference"]["base"]),
                pct(rows[tier]["before"]["harmful_rate"]),
                *(pct(cells.get(column)) for column in columns),
            )
    return table


def notes(section: dict) -> list[str]:
    lines = []
    for name, rows in section.items():
        verdict = "raised" if rows["benign_raises_harm"] else "did NOT raise"
        lines.append(
            f"{name}: benign fine-tuning {verdict} the harmful rate beyond the aligned model's (95% bootstrap interval)"
        )
    return lines


SECTION = DemoSection("finetune", run, render, notes)
