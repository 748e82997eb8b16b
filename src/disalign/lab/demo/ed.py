"""The demo's ED section: each aligned model emulated-disaligned against the base, with the
paper's baselines, as ordinary `ed` runs."""

from __future__ import annotations

from rich.table import Table

from disalign.api.ed import ed
from disalign.lab.demo.base import DemoContext, DemoSection
from disalign.lab.format import number, pct
from disalign.world.train import ALIGNMENT_METHODS

ED_ALPHAS = (0.0, 0.5, 1.0, 2.0, 4.0)


def run(ctx: DemoContext) -> dict:
    """World models ignore system prompts, so BaseMP is the base model, AlignMP the aligned one,
    and EDBase contrasts the base with itself (which gives the base back): reported all the same,
    at α = 1 only, since every α gives the same model."""
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
                **ctx.sampling_options(),
                out=ctx.run.file(f"ed-{name}-{set_name}"),
            )
            section[name][set_name] = [row.model_dump() for row in result.results]
        ed_rows = [row for row in section[name]["unsafe"] if row["method"] == "ed"]
        best = max(ed_rows, key=lambda row: row["harmful_rate"])
        base_rate = next(row["harmful_rate"] for row in ed_rows if row["alpha"] == 0)
        section[name]["best_alpha"] = best["alpha"]
        section[name]["best_over_base"] = best["harmful_rate"] / base_rate if base_rate else None
    return section


def render(section: dict) -> Table:
    table = Table(title="Emulated disalignment on unsafe requests: harmful rate (exact judge)")
    table.add_column("aligned")
    table.add_column("AlignMP", justify="right")
    table.add_column("EDBase α=1", justify="right")
    for alpha in ED_ALPHAS:
        table.add_column("base (α=0)" if alpha == 0 else f"ED α={alpha:g}", justify="right")
    table.add_column("best / base", justify="right")
    for name, rows in section.items():
        cell = {(row["method"], row["alpha"]): row["harmful_rate"] for row in rows["unsafe"]}
        ratio = rows["best_over_base"]
        table.add_row(
            name,
            pct(cell[("align_mp", 0.0)]),
            pct(cell[("ed_base", 1.0)]),
            *(pct(cell[("ed", alpha)]) for alpha in ED_ALPHAS),
            "n/a" if ratio is None else f"{number(ratio, 2)}x",
        )
    return table


SECTION = DemoSection("ed", run, render)
