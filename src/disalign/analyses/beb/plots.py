"""BEB plots: the component curves behind the estimates, the many-shot NLL with its fit, and the
harmful rate over harmful sentences (through `disalign.core.plots.harm_curve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from disalign.analyses.beb.estimators import KL_FIT_POINTS, power_law
from disalign.core.plots import pyplot


def components(path: Path, estimates: dict[str, Any], *, title: str) -> Path:
    """Three panels over prompt length: the next-sentence KL(P₋‖P₊) with β and β′, the variance of
    log P₋/P₊ with the line σ²·n, and KL(P₋‖P_LLM) with the line whose x-intercept is log(1/α)/β."""
    plt = pyplot()
    curves = estimates["curves"]
    lengths = np.asarray(curves["lengths"], dtype=float)
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    left.plot(lengths, curves["step_log_ratio"], marker="o", label="KL(P₋‖P₊) of the next sentence")
    for key, style in (("beta", "--"), ("beta_prime", ":")):
        if estimates[key]["value"] is not None:
            left.axhline(estimates[key]["value"], linestyle=style, color="grey", label=f"{key} (envelope)")
    left.set(xlabel="prompt length (sentences)", ylabel="nats", title="distinguishability")
    middle.plot(lengths, curves["log_ratio_variance"], marker="o", label="Var log P₋/P₊")
    if estimates["sigma"]["value"] is not None:
        middle.plot(lengths, estimates["sigma"]["value"] ** 2 * lengths, "--", color="grey", label="σ²·n")
    middle.set(xlabel="prompt length (sentences)", ylabel="nats²", title="similarity")
    right.plot(lengths, curves["model_kl"], marker="o", label="KL(P₋‖P_LLM(·|s))")
    intercept, flip = estimates["log_inv_alpha"]["value"], estimates["predicted_flip"]["value"]
    if intercept is not None and flip is not None:
        xs = np.linspace(0, max(flip, lengths[min(KL_FIT_POINTS, len(lengths)) - 1]), 20)
        right.plot(
            xs, intercept * (1 - xs / flip), "--", color="grey", label=f"line through the first {KL_FIT_POINTS} lengths"
        )
    right.set(xlabel="prompt length (sentences)", ylabel="nats", title="KL to the model")
    for axes in (left, middle, right):
        axes.legend(fontsize="x-small")
    figure.suptitle(title)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def manyshot(path: Path, series: dict[str, dict[str, Any]], *, title: str) -> Path:
    """Mean NLL of the harmful answer over shots (log x) with intervals, and each power-law fit."""
    plt = pyplot()
    from matplotlib.ticker import ScalarFormatter

    figure, axes = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for index, (label, summary) in enumerate(series.items()):
        rows = [r for r in summary["nll"] if r["shots"] >= 1]
        xs = np.array([r["shots"] for r in rows], dtype=float)
        ys = np.array([r["nll"] for r in rows])
        errors = [ys - [r["nll_ci"][0] for r in rows], [r["nll_ci"][1] for r in rows] - ys]
        axes.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, color=f"C{index}", label=label)
        fit = summary.get("fit", {})
        if all(isinstance(fit.get(k), dict) and fit[k]["value"] is not None for k in ("C", "a", "K")):
            dense = np.geomspace(xs.min(), xs.max(), 50)
            axes.plot(
                dense,
                power_law(dense, fit["C"]["value"], fit["a"]["value"], fit["K"]["value"]),
                "--",
                color=f"C{index}",
                linewidth=1,
            )
    axes.set(xscale="log", xlabel="harmful shots n", ylabel="NLL of the harmful answer (nats)", title=title)
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.legend(fontsize="small")
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def harm_over_sentences(path: Path, fields: dict[str, Any], *, title: str) -> Path:
    """The harmful rate over k harmful sentences, and after the aligning prompt where it was measured."""
    from disalign.core.plots import harm_curve

    series = {"no aligning prompt": [(r["k"], r["harmful_rate"], r["ci"]) for r in fields["curve"]]}
    if "curve_aligning" in fields:
        label = f"after {fields['curve_aligning'][0]['aligning']} aligning sentences"
        series[label] = [(r["k"], r["harmful_rate"], r["ci"]) for r in fields["curve_aligning"]]
    return harm_curve(path, series, xlabel="harmful sentences k", title=title)
