"""The mechanistic analysis's figures: τ per layer, ΔW's spectrum, KL per response position."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from disalign.core.plots import pyplot


def tau_layers(path: Path, tables: Mapping[str, Sequence[dict]], *, title: str) -> Path:
    """One panel per model: mean τ per layer with ±1 std bands for safe, unsafe and every other set."""
    plt = pyplot()
    figure, axes = plt.subplots(
        1, len(tables), figsize=(3.6 * len(tables), 3.4), sharey=True, constrained_layout=True, squeeze=False
    )
    for panel, (model, rows) in zip(axes[0], tables.items(), strict=True):
        layers = [row["layer"] for row in rows]
        series = {"safe": [row["tau_safe"] for row in rows], "unsafe": [row["tau_unsafe"] for row in rows]}
        for name in rows[0]["sets"]:
            series[name] = [row["sets"][name] for row in rows]
        for index, (name, values) in enumerate(series.items()):
            means = [mean for mean, _ in values]
            panel.plot(layers, means, marker="o", color=f"C{index}", label=name)
            panel.fill_between(
                layers, [m - s for m, s in values], [m + s for m, s in values], color=f"C{index}", alpha=0.15
            )
        panel.axhline(0, color="grey", linewidth=0.8)
        panel.set(title=model, xlabel="layer", xticks=layers)
    axes[0][0].set_ylabel("τ = ‖a − μ_unsafe‖ − ‖a − μ_safe‖")
    axes[0][-1].legend(fontsize="small")
    figure.suptitle(title)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def spectrum(path: Path, rows_by_model: Mapping[str, Sequence[dict]], *, share: float = 0.9) -> Path:
    """One panel per aligned model: cumulative share of ΔW's σ² against k for every MLP matrix."""
    plt = pyplot()
    figure, axes = plt.subplots(
        1,
        len(rows_by_model),
        figsize=(3.6 * len(rows_by_model), 3.4),
        sharey=True,
        constrained_layout=True,
        squeeze=False,
    )
    for panel, (model, rows) in zip(axes[0], rows_by_model.items(), strict=True):
        for row in rows:
            cumulative = row["cumulative_share"]
            panel.plot(range(1, len(cumulative) + 1), cumulative, linewidth=1, label=f"L{row['layer']} {row['matrix']}")
        panel.axhline(share, color="grey", linestyle="--", linewidth=0.8)
        panel.set(title=f"ΔW {model}", xlabel="k (top singular values)", xscale="log")
    axes[0][0].set_ylabel("share of Σσ² in the top k")
    axes[0][-1].legend(fontsize="x-small", ncol=2)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def kl_positions(path: Path, profiles: Mapping[str, Sequence[float]], *, title: str) -> Path:
    """Mean KL(aligned ‖ base) per response position, one line per (model, prefix kind)."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for label, values in profiles.items():
        axes.plot(range(len(values)), values, marker="o", label=label)
    axes.set(xlabel="response position", ylabel="KL(aligned ‖ base), nats", title=title)
    axes.legend(fontsize="small")
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
