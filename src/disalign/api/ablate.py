"""`disalign ablate`: refusal-direction ablation (Arditi et al. 2024), chosen by a search over
refusals and KL, saved as an ordinary model directory, judged before and after, with its damage."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from disalign.api.common import finish, judge_of, model_info, open_run, prompts_fingerprint, prompts_of
from disalign.core.options import JudgeOptions, RunOptions, SamplingOptions
from disalign.core.verbs import verb
from disalign.errors import UserError
from disalign.results import RunResult


class AblateConfig(JudgeOptions, SamplingOptions, RunOptions):
    model: str = Field(description="Aligned model: HF directory, adapter directory (merged first), .gguf or 'smollm2'.")
    harmful: str | None = Field(None, description="Harmful prompt source (default with --world: world:unsafe).")
    harmless: str | None = Field(None, description="Harmless prompt source (default with --world: world:safe).")
    column: str | None = Field(None, description="Prompt column of CSV/JSONL files.")
    limit: int | None = Field(None, ge=1, description="Use only the first N prompts of each source.")
    world: Path | None = Field(None, description="Zoo directory: enables world:<set> prompts and the world judge.")
    judge: str | None = Field(None, description="Judge name (default: world with --world, else keyword).")
    objective: Literal["refusal", "harm"] = Field(
        "refusal", description="What the search minimises beside KL: refusals, or harmful requests left unanswered."
    )
    sampler: Literal["auto", "optuna", "grid"] = Field(
        "auto", description="optuna (multi-objective TPE), grid (each layer's direction, full ablation), auto."
    )
    trials: int = Field(40, ge=1, description="Optuna trials.")
    tolerance: float = Field(
        0.05, ge=0, le=1, description="Accept this much more refusal than the best trial for a lower KL."
    )
    layer: int | None = Field(None, description="Ablate this layer's direction in full instead of searching.")
    position: int = Field(-1, le=-1, description="With --layer: which of the prompt's last tokens (-1 is the last).")
    positions: int | None = Field(None, ge=1, description="Candidate prompt positions (default: the template's tail).")
    search_tokens: int = Field(16, ge=1, description="Greedy response tokens judged while searching.")


@verb("ablate", AblateConfig)
def ablate(config: AblateConfig) -> RunResult:
    """Refusal-direction ablation: find the direction, choose the edit by refusals and KL, save the
    orthogonalised model, judge it before and after, and measure its damage."""
    from disalign.attacks.ablation.run import AblateSettings, run_ablate
    from disalign.core.models import load_model
    from disalign.judges.validate import judge_fields

    sources = {
        "harmful": config.harmful or ("world:unsafe" if config.world else None),
        "harmless": config.harmless or ("world:safe" if config.world else None),
    }
    for name, source in sources.items():
        if source is None:
            raise UserError(f"{name}: a prompt source is needed (or --world DIR for the world's sets)")
    harmful, harmless = (prompts_of(config, source) for source in sources.values())
    judge = judge_of(config, config.judge or ("world" if config.world else "keyword"))
    model = model_info(config.model)
    inputs = {"harmful": prompts_fingerprint(harmful), "harmless": prompts_fingerprint(harmless)}
    run = open_run(config, "ablate", {**inputs, "model": model["fingerprint"]})
    lm, tokenizer = load_model(config.model)
    if hasattr(lm, "merge_and_unload"):  # an adapter: the edit applies to the merged weights
        lm = lm.merge_and_unload()
    settings = AblateSettings(
        objective=config.objective,
        sampler=config.sampler,
        trials=config.trials,
        tolerance=config.tolerance,
        layer=config.layer,
        position=config.position,
        positions=config.positions,
        search_tokens=config.search_tokens,
        seed=config.seed,
    )
    summary = run_ablate(
        run, lm, tokenizer, harmful, harmless, judge, config.sampling(), settings, task_accuracy=judge.name == "world"
    )
    direction = {key: summary["direction"][key] for key in ("layer", "position")}
    rows = [
        {"model": "original", **summary["before"]},
        {"model": "ablated", **direction, **summary["after"], **summary["damage"]},
    ]
    result = RunResult(
        command="ablate",
        models={"model": model, "ablated": {"path": summary["ablated_model"]}},
        results=rows,
        **judge_fields(judge),
        **summary,
    )
    return finish(run, result)
