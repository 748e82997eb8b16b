"""The demo's ablation section: each aligned model's chosen refusal direction ablated, with the
harmful rate it restores and the KL it pays, beside the base model and the 10-shot fine-tuning attack."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from disalign.api.ablate import ablate
from disalign.lab.demo.base import DemoContext, DemoSection
from disalign.lab.format import number, pct

# Fewer than the verb's default 40: the demo runs one search per aligned model on a laptop CPU.
DEMO_TRIALS = 16


def run(ctx: DemoContext) -> dict[str, Any]:
    from disalign.world.train import ALIGNMENT_METHODS

    models = ctx.results.get("models", {})
    section: dict[str, Any] = {}
    for name in ALIGNMENT_METHODS:
        result = ablate(
            model=str(ctx.zoo / name),
            world=ctx.zoo,
            judge="world",
            trials=DEMO_TRIALS,
            search_tokens=ctx.sampling.max_new_tokens,
            max_new_tokens=ctx.sampling.max_new_tokens,
            temperature=ctx.sampling.temperature,
            top_p=ctx.sampling.top_p,
            top_k=ctx.sampling.top_k,
            batch_size=ctx.sampling.batch_size,
            seed=ctx.sampling.seed,
            out=ctx.run.file(f"ablate-{name}"),
        )
        section[name] = {
            "base": models.get("base", {}).get("unsafe", {}).get("harmful_rate"),
            "before": result.before,
            "after": result.after,
            "damage": result.damage,
            "direction": result.direction,
            "outcome": result.outcome,
            "finetune_10x5": _finetune_cell(ctx.results.get("finetune", {}).get(name, {}), shots=10, epochs=5),
        }
    return section


def _finetune_cell(section: dict[str, Any], *, shots: int, epochs: int) -> dict[str, Any] | None:
    """The harmful fine-tuning cell of the demo's fine-tuning section, where it ran."""
    for cell in section.get("harmful", {}).get("cells", []):
        if cell.get("shots") == shots and cell.get("epochs") == epochs:
            return {"harmful_rate": cell.get("harmful_rate"), "damage": cell.get("damage")}
    return None


def render(section: dict[str, Any]) -> Table:
    table = Table(
        title="Refusal-direction ablation on unsafe requests: harmful rate (exact judge), refusals left, damage"
    )
    for heading in (
        "aligned",
        "base",
        "before",
        "ablated",
        "refused",
        "KL first",
        "KL 32",
        "Δ safe acc",
        "FT 10×5",
        "FT KL 32",
    ):
        table.add_column(heading, justify="left" if heading == "aligned" else "right")
    for name, row in section.items():
        finetuned = row["finetune_10x5"] or {}
        after, damage = row["after"] or {}, row["damage"] or {}  # none: no edit within the KL budget
        table.add_row(
            name,
            pct(row["base"]),
            pct(row["before"]["harmful_rate"]),
            pct(after.get("harmful_rate")) if after else "no edit",
            pct(after.get("refusal_rate")),
            number(damage.get("kl_first_token")),
            number(damage.get("kl_mean_32")),
            pct(damage.get("safe_accuracy_delta"), signed=True),
            pct(finetuned.get("harmful_rate")),
            number((finetuned.get("damage") or {}).get("kl_mean_32")),
        )
    return table


def notes(section: dict[str, Any]) -> list[str]:
    lines = []
    for name, row in section.items():
        base, after = row["base"], row["after"]
        if after is None:
            lines.append(f"{name}: {row['outcome']}")
            continue
        if base is None:
            continue
        low, high = after["ci"]
        if after["harmful_rate"] >= base:
            verdict = "reached"
        elif high >= base:
            verdict = "came within its 95% interval of"
        else:
            verdict = "did NOT reach"
        line = (
            f"{name}: ablation {verdict} the base model's harmful rate ({pct(after['harmful_rate'])}, "
            f"interval {pct(low)}–{pct(high)}, vs {pct(base)}) "
            f"at first-token KL {number(row['damage']['kl_first_token'])}"
        )
        if verdict != "reached" and after["refusal_rate"] is not None and after["refusal_rate"] < 0.5:
            line += f"; refusals fell to {pct(after['refusal_rate'])}: it neither refuses nor carries the requests out"
        lines.append(line)
    return lines


SECTION = DemoSection("ablate", run, render, notes)
