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

from disalign.core.progress import console
from disalign.core.runs import RunDir
from disalign.world import JAILBREAK_FAMILIES, WorldConfig, build_zoo
from disalign.world.evaluate import evaluate_zoo, sampling_for
from disalign.world.zoo import load_world


@dataclass
class DemoContext:
    zoo: Path
    run: RunDir
    config: WorldConfig


@dataclass(frozen=True)
class DemoSection:
    key: str
    run: Callable[[DemoContext], Any]
    render: Callable[[Any], Table]


def _evaluate_models(ctx: DemoContext) -> dict:
    world = load_world(ctx.zoo)
    sampling = sampling_for(world, ctx.config.eval.temperature, ctx.config.eval.batch, ctx.config.eval.seed)
    return evaluate_zoo(ctx.zoo, ctx.run, ctx.config.eval.n, sampling)


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


SECTIONS: list[DemoSection] = [DemoSection("models", _evaluate_models, models_table)]


def run_demo(out: str | Path, zoo: str | Path, config: WorldConfig) -> dict:
    start = time.perf_counter()
    zoo = Path(zoo)
    build_zoo(zoo, config)
    run = RunDir(out, "demo", {"zoo": str(zoo.resolve()), "world": config.model_dump()})
    ctx = DemoContext(zoo, run, config)
    summary: dict[str, Any] = {}
    for section in SECTIONS:
        summary[section.key] = section.run(ctx)
        console.print(section.render(summary[section.key]))
    summary["config"] = config.model_dump()
    summary["seconds"] = round(time.perf_counter() - start, 1)
    run.write_summary(summary)
    console.print(f"wrote {run.file('summary.json')} ({summary['seconds']} s)")
    return summary
