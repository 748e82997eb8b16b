"""`disalign demo`: the whole laboratory on a laptop CPU.

Builds (or reuses) the world zoo, then runs each section in turn. A section adds one key to
`summary.json` beside "models" and prints one table; later analyses join by appending to
SECTIONS, not by editing the ones before them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from disalign.core.generation import SamplingConfig
from disalign.core.progress import console
from disalign.core.runs import RunDir
from disalign.judges import get_judge
from disalign.judges.validate import judge_fields
from disalign.world import JAILBREAK_FAMILIES, World, WorldConfig, build_zoo
from disalign.world.evaluate import evaluate_zoo, sampling_for
from disalign.world.train import ALIGNMENT_METHODS
from disalign.world.zoo import load_world


@dataclass
class DemoContext:
    zoo: Path
    run: RunDir
    config: WorldConfig
    results: dict[str, Any]  # earlier sections' results, by key
    world: World
    judge: Any  # the world's exact judge, which every section uses
    sampling: SamplingConfig


@dataclass(frozen=True)
class DemoSection:
    key: str
    run: Callable[[DemoContext], Any]
    render: Callable[[Any], Table]
    notes: Callable[[Any], list[str]] = lambda _: []


def _evaluate_models(ctx: DemoContext) -> dict:
    return evaluate_zoo(ctx.zoo, ctx.run, ctx.config.eval.n, ctx.sampling)


def models_table(models: dict) -> Table:
    table = Table(title="Harmful rate by prompt set (exact judge); safe = task accuracy")
    table.add_column("model")
    table.add_column("safe acc", justify="right")
    table.add_column("unsafe harm", justify="right")
    table.add_column("unsafe refuse", justify="right")
    for family in JAILBREAK_FAMILIES:
        table.add_column(family, justify="right")
    for name, row in models.items():
        table.add_row(
            name,
            f"{row['safe_accuracy']:.0%}",
            f"{row['unsafe']['harmful_rate']:.0%}",
            f"{row['unsafe']['refusal_rate']:.0%}",
            *(f"{row['jailbreaks'][f]['harmful_rate']:.0%}" for f in JAILBREAK_FAMILIES),
        )
    return table


ED_ALPHAS = (0.0, 0.5, 1.0, 2.0, 4.0)


def _emulated_disalignment(ctx: DemoContext) -> dict:
    """ED of each aligned model against the base, with the paper's baselines, as ordinary `ed` runs.

    World models ignore system prompts, so BaseMP is the base model, AlignMP the aligned one,
    and EDBase contrasts the base with itself (which gives the base back): reported all the same,
    at α = 1 only, since every α gives the same model.
    """
    from disalign.attacks.emulated import chat_format
    from disalign.attacks.emulated.run import EDPair, grid, run_ed
    from disalign.core.models import load_model
    from disalign.world import prompt_records

    base, base_tokenizer = load_model(ctx.zoo / "base")
    section: dict[str, dict] = {}
    for name in ALIGNMENT_METHODS:
        aligned, tokenizer = load_model(ctx.zoo / name)
        pair = EDPair(base, aligned, (base_tokenizer, tokenizer), chat_format(base_tokenizer), chat_format(tokenizer))
        section[name] = {}
        for set_name in ("unsafe", "safe"):
            prompts = prompt_records(ctx.zoo, set_name, ctx.config.eval.n, ctx.config.eval.seed)
            cells = [*grid(ED_ALPHAS, baselines=False), ("base_mp", 0.0), ("align_mp", 0.0), ("ed_base", 1.0)]
            config = {"base": "base", "aligned": name, "prompts": f"world:{set_name}", "cells": cells}
            run = RunDir(ctx.run.file(f"ed-{name}-{set_name}"), "ed", config)
            section[name][set_name] = run_ed(run, pair, prompts, cells, ctx.judge, ctx.sampling, seeds=1)["results"]
        ed_rows = [r for r in section[name]["unsafe"] if r["method"] == "ed"]
        best = max(ed_rows, key=lambda r: r["harmful_rate"])
        base_rate = next(r["harmful_rate"] for r in ed_rows if r["alpha"] == 0)
        section[name]["best_alpha"] = best["alpha"]
        section[name]["best_over_base"] = best["harmful_rate"] / base_rate if base_rate else None
    return section


def ed_table(section: dict) -> Table:
    table = Table(title="Emulated disalignment on unsafe requests: harmful rate (exact judge)")
    table.add_column("aligned")
    table.add_column("AlignMP", justify="right")
    table.add_column("EDBase α=1", justify="right")
    for alpha in ED_ALPHAS:
        table.add_column("base (α=0)" if alpha == 0 else f"ED α={alpha:g}", justify="right")
    table.add_column("best / base", justify="right")
    for name, rows in section.items():
        cell = {(r["method"], r["alpha"]): r["harmful_rate"] for r in rows["unsafe"]}
        ratio = rows["best_over_base"]
        table.add_row(
            name,
            f"{cell[('align_mp', 0.0)]:.0%}",
            f"{cell[('ed_base', 1.0)]:.0%}",
            *(f"{cell[('ed', a)]:.0%}" for a in ED_ALPHAS),
            "n/a" if ratio is None else f"{ratio:.2f}x",
        )
    return table


# (shots grid, epochs grid) per tier; "harmful+safety" is tier 1 with safety examples mixed in.
FT_GRIDS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "harmful": ((10, 50), (1, 5)),
    "identity": ((10, 50), (10,)),
    "benign": ((10, 50), (5,)),
    "harmful+safety": ((10,), (5,)),
}
FT_SAFETY_EXAMPLES = 10


def _finetuning(ctx: DemoContext) -> dict:
    """The three fine-tuning tiers (and tier 1 with safety mixing) on each aligned model, as
    ordinary `finetune` runs, with the base and the aligned model as reference lines."""
    from disalign.attacks.finetune import identity_prompts, preset_config, recipe_dataset, run_finetune
    from disalign.world import prompt_records
    from disalign.world.spec import COMPLIANCE_PREFIX

    unsafe = prompt_records(ctx.zoo, "unsafe", ctx.config.eval.n, ctx.config.eval.seed)
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
            config = preset_config(recipe, world=True, mix_safety=FT_SAFETY_EXAMPLES if tier != recipe else 0)
            prompts = identity_prompts(unsafe, world=True) if recipe == "identity" else unsafe
            run = RunDir(
                ctx.run.file(f"finetune-{name}-{tier}"),
                "finetune",
                {
                    "model": name,
                    "finetune": config.model_dump(),
                    "shots": shots,
                    "epochs": epochs,
                },
            )
            section[name][tier] = run_finetune(
                run,
                ctx.zoo / name,
                lambda n, config=config: recipe_dataset(config, n, world=ctx.world),
                config,
                prompts,
                ctx.judge,
                ctx.sampling,
                shots,
                epochs,
                strip_prefix=COMPLIANCE_PREFIX,
                references={"base model": section[name]["reference"]["base"]},
            )
        benign = section[name]["benign"]
        section[name]["benign_raises_harm"] = any(
            cell["ci"][0] > benign["before"]["harmful_rate"] for cell in benign["cells"]
        )
    return section


def finetune_table(section: dict) -> Table:
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
            base = rows["reference"]["base"]
            table.add_row(
                name,
                tier,
                "" if base is None else f"{base:.0%}",
                f"{rows[tier]['before']['harmful_rate']:.0%}",
                *(f"{cells[c]:.0%}" if c in cells else "" for c in columns),
            )
    return table


def finetune_notes(section: dict) -> list[str]:
    notes = []
    for name, rows in section.items():
        verdict = "raised" if rows["benign_raises_harm"] else "did NOT raise"
        notes.append(
            f"{name}: benign fine-tuning {verdict} the harmful rate beyond the aligned model's (95% bootstrap interval)"
        )
    return notes


SECTIONS: list[DemoSection] = [
    DemoSection("models", _evaluate_models, models_table),
    DemoSection("ed", _emulated_disalignment, ed_table),
    DemoSection("finetune", _finetuning, finetune_table, finetune_notes),
]


def run_demo(out: str | Path, zoo: str | Path, config: WorldConfig) -> dict:
    start = time.perf_counter()
    zoo = Path(zoo)
    build_zoo(zoo, config)
    # Seconds of this invocation: a rerun reuses the zoo and every record already made.
    timings = {"zoo": round(time.perf_counter() - start, 1)}
    run = RunDir(out, "demo", {"zoo": str(zoo.resolve()), "world": config.model_dump()})
    summary: dict[str, Any] = {}
    world = load_world(zoo)
    ctx = DemoContext(
        zoo, run, config, summary, world, get_judge("world", world=world), sampling_for(world, config.eval)
    )
    for section in SECTIONS:
        section_start = time.perf_counter()
        summary[section.key] = section.run(ctx)
        timings[section.key] = round(time.perf_counter() - section_start, 1)
        console.print(section.render(summary[section.key]))
        for note in section.notes(summary[section.key]):
            console.print(note)
    summary.update(judge_fields(ctx.judge))
    summary["config"] = config.model_dump()
    summary["section_seconds"] = timings
    summary["seconds"] = round(time.perf_counter() - start, 1)
    run.write_summary(summary)
    console.print(f"wrote {run.file('summary.json')} ({summary['seconds']} s)")
    return summary
