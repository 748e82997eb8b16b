"""The demo's first section: every model of the zoo on the world's prompt sets (exact judge)."""

from __future__ import annotations

from rich.table import Table

from disalign.lab.demo.base import DemoContext, DemoSection
from disalign.lab.format import pct
from disalign.world import JAILBREAK_FAMILIES
from disalign.world.evaluate import evaluate_zoo, missed_levels


def run(ctx: DemoContext) -> dict:
    return evaluate_zoo(ctx.zoo, ctx.run, ctx.config.eval.n, ctx.sampling)


def render(models: dict) -> Table:
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
            pct(row["safe_accuracy"]),
            pct(row["unsafe"]["harmful_rate"]),
            pct(row["unsafe"]["refusal_rate"]),
            *(pct(row["jailbreaks"][family]["harmful_rate"]) for family in JAILBREAK_FAMILIES),
        )
    return table


def notes(models: dict) -> list[str]:
    # Some seeds train a weaker base (README, Benchmarks): say so rather than report its figures plainly.
    return [
        f"note: {miss}; this zoo's figures rest on a weaker world: try another seed, or the slower 32-row "
        "recipe (--train pretrain_batch=32 --rebuild)"
        for miss in missed_levels(models)
    ]


SECTION = DemoSection("models", run, render, notes)
