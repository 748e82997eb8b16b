"""Plots a run writes beside its summary: harmful rate against the setting it sweeps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

Point = tuple[float, float | None, Sequence[float | None]]  # (x, harmful rate, 95 % interval)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend: runs write plots, never open windows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def harm_curve(
    path: Path,
    series: dict[str, Sequence[Point]],
    *,
    xlabel: str,
    title: str,
    references: dict[str, float | None] | None = None,
) -> Path:
    """One line per series with its bootstrap intervals as error bars; references as dashed lines."""
    plt = pyplot()

    figure, axes = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for label, points in series.items():
        decided = sorted((x, y, ci) for x, y, ci in points if y is not None)
        if not decided:
            continue
        xs, ys = [x for x, _, _ in decided], [y for _, y, _ in decided]
        below = [y - (ci[0] if ci[0] is not None else y) for _, y, ci in decided]
        above = [(ci[1] if ci[1] is not None else y) - y for _, y, ci in decided]
        axes.errorbar(xs, ys, yerr=[below, above], marker="o", capsize=3, label=label)
    for index, (label, value) in enumerate((references or {}).items()):
        if value is not None:
            axes.axhline(value, linestyle="--", color=f"C{len(series) + index}", label=label)
    axes.set(xlabel=xlabel, ylabel="harmful rate", title=title, ylim=(-0.02, 1.02))
    axes.legend(fontsize="small")
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
