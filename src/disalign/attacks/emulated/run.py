"""An ED run: ED and the paper's baselines over an α grid and several seeds, judged.

One record per (prompt, method, α, seed); one result row per (method, α) with the harmful rate
and its 95 % interval (resampling whole prompts when there are several seeds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from disalign.attacks.emulated.decoder import contrast_generate
from disalign.attacks.emulated.ed import EmulatedModel, method_streams
from disalign.attacks.emulated.templates import PromptFormat
from disalign.core.damage import DamageMeter
from disalign.core.evaluate import generate_and_judge, summarise
from disalign.core.generation import SamplingConfig
from disalign.core.plots import harm_curve
from disalign.core.runs import RunDir
from disalign.data import PromptRecord
from disalign.errors import UserError

SINGLE_MODEL_METHODS = ("base_mp", "align_mp")


@dataclass(frozen=True)
class EDPair:
    base: Any
    aligned: Any
    tokenizer: Any  # one tokenizer, or a (base, aligned) pair
    base_format: PromptFormat | None = None
    aligned_format: PromptFormat | None = None
    stop_strings: tuple[str, ...] | None = None


def grid(
    alphas: Sequence[float], baselines: bool, ed_base_alphas: Sequence[float] | None = None
) -> list[tuple[str, float]]:
    """(method, α) cells: ED over every α; with baselines, AlignMP once, EDBase over every α > 0
    (or over `ed_base_alphas`), and BaseMP unless α = 0 is in the grid (ED at α = 0 is BaseMP)."""
    if not alphas:
        raise UserError("give at least one alpha")
    if any(a < 0 for a in alphas):
        raise UserError(f"alpha must be >= 0, got {min(alphas)}")
    cells = [("ed", float(a)) for a in alphas]
    if baselines:
        cells += [("base_mp", 0.0)] if 0 not in alphas else []
        cells += [("align_mp", 0.0)] + [("ed_base", float(a)) for a in (ed_base_alphas or alphas) if a > 0]
    return cells


def run_ed(
    run: RunDir,
    pair: EDPair,
    prompts: Sequence[PromptRecord],
    cells: Sequence[tuple[str, float]],
    judge,
    sampling: SamplingConfig,
    seeds: int,
    damage: DamageMeter | None = None,
) -> list[dict[str, Any]]:
    """Every (method, α) cell and seed over the prompts, judged and recorded as it goes (a rerun
    continues); returns one result row per cell and plots them in a persistent run. With `damage`,
    each ED row also says what its α costs on harmless prompts against the aligned model, measured
    once per α and recorded, so a rerun reads it back."""
    if not prompts:
        raise UserError("the prompt source has no usable rows")
    results = []
    for method, alpha in cells:
        records = []
        for seed in range(seeds):

            def respond(batch: list[PromptRecord], batch_seed: int, method=method, alpha=alpha) -> list[str]:
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
                return contrast_generate(contrast, replace(sampling, seed=batch_seed))

            records += generate_and_judge(
                run,
                prompts,
                respond,
                judge,
                batch_size=sampling.batch_size,
                seed=sampling.seed + seed,
                key=lambda p, m=method, a=alpha, s=seed: f"{p.id}|{m}|{a:g}|{s}",
                fields={"method": method, "alpha": alpha, "seed": seed},
                description=f"{method} α={alpha:g} seed {seed}",
            )
        results.append({"method": method, "alpha": alpha, **summarise(records, cluster_by="id" if seeds > 1 else None)})
    if damage is not None:
        for row in results:
            if row["method"] == "ed":
                alpha = row["alpha"]
                row["damage"] = run.stage(f"damage|ed|{alpha:g}", lambda a=alpha: _damage(damage, pair, a, sampling))
    if run.persistent:
        plot_ed(run.file("harm_curve.png"), results)
    return results


def _damage(meter: DamageMeter, pair: EDPair, alpha: float, sampling: SamplingConfig) -> dict[str, Any]:
    """What ED at `alpha` costs against the aligned model it starts from. Both read the aligned model's
    chat rendering here, whatever template ED gives the base; the task's prompts are answered by the
    ED decoder."""

    def respond(model: EmulatedModel, prompts: Sequence[PromptRecord]) -> list[str]:
        contrast = method_streams(
            "ed", model.alpha, pair.base, pair.aligned, pair.tokenizer, [p.prompt for p in prompts],
            base_format=pair.base_format, aligned_format=pair.aligned_format, stop_strings=pair.stop_strings,
        )  # fmt: skip
        return contrast_generate(contrast, sampling)

    return meter(pair.aligned, EmulatedModel(pair.base, pair.aligned, alpha), respond)


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
