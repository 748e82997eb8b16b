"""`disalign ed`: ED and the paper's baselines over an α grid and several seeds, judged.

One record per (prompt, method, α, seed); the summary lists the harmful rate with its 95 %
bootstrap interval per method and α. α = 0 of method `ed` is the base model itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from disalign.attacks.emulated.decoder import contrast_generate, method_streams
from disalign.attacks.emulated.templates import PromptFormat
from disalign.core.evaluate import generate_and_judge, summarise
from disalign.core.generation import SamplingConfig
from disalign.core.plots import harm_curve
from disalign.core.runs import RunDir
from disalign.data import PromptRecord
from disalign.errors import UserError
from disalign.judges.validate import judge_fields

SINGLE_MODEL_METHODS = ("base_mp", "align_mp")


@dataclass(frozen=True)
class EDPair:
    base: Any
    aligned: Any
    tokenizer: Any
    base_format: PromptFormat | None = None
    aligned_format: PromptFormat | None = None
    stop_strings: tuple[str, ...] | None = None


def grid(alphas: Sequence[float], baselines: bool) -> list[tuple[str, float]]:
    """(method, α) cells: ED over every α; with baselines, EDBase over every α and the single-model ones once."""
    if not alphas:
        raise UserError("give at least one --alpha")
    if any(a < 0 for a in alphas):
        raise UserError(f"--alpha must be >= 0, got {min(alphas)}")
    cells = [("ed", float(a)) for a in alphas]
    if baselines:
        cells += [(m, 0.0) for m in SINGLE_MODEL_METHODS] + [("ed_base", float(a)) for a in alphas if a > 0]
    return cells


def run_ed(
    run: RunDir,
    pair: EDPair,
    prompts: Sequence[PromptRecord],
    cells: Sequence[tuple[str, float]],
    judge,
    sampling: SamplingConfig,
    seeds: int,
) -> dict[str, Any]:
    """Every (method, α) cell and seed over the prompts, judged and recorded as it goes (a rerun
    continues); writes summary.json and harm_curve.png and returns the summary."""
    if not prompts:
        raise UserError("the prompt source has no usable rows")
    results = []
    for method, alpha in cells:
        records = []
        for seed in range(seeds):
            seeded = replace(sampling, seed=sampling.seed + seed)

            def respond(batch: list[PromptRecord], method=method, alpha=alpha, seeded=seeded) -> list[str]:
                contrast = method_streams(
                    method,
                    alpha,
                    pair.base,
                    pair.aligned,
                    pair.tokenizer,
                    [p.prompt for p in batch],
                    base_format=pair.base_format,
                    aligned_format=pair.aligned_format,
                    stop_strings=pair.stop_strings,
                )
                return contrast_generate(contrast, seeded)

            records += generate_and_judge(
                run,
                prompts,
                respond,
                judge,
                batch_size=sampling.batch_size,
                key=lambda p, m=method, a=alpha, s=seed: f"{p.id}|{m}|{a:g}|{s}",
                fields={"method": method, "alpha": alpha, "seed": seed},
                description=f"{method} α={alpha:g} seed {seed}",
            )
        results.append({"method": method, "alpha": alpha, **summarise(records)})
    summary = {"results": results, **judge_fields(judge), "seeds": seeds}
    run.write_summary(summary)
    plot_ed(run.file("harm_curve.png"), results)
    return summary


def plot_ed(path, results: Sequence[dict[str, Any]]):
    """ED and EDBase over α; the single-model baselines as reference lines."""
    series: dict[str, list] = {}
    references = {}
    for row in results:
        if row["method"] in SINGLE_MODEL_METHODS:
            references[row["method"]] = row["harmful_rate"]
        else:
            series.setdefault(row["method"], []).append((row["alpha"], row["harmful_rate"], row["ci"]))
    return harm_curve(path, series, xlabel="α", title="Emulated disalignment", references=references)
