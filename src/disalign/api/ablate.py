"""`disalign ablate`: refusal-direction ablation (Arditi et al. 2024), chosen by a search over
refusals and KL, saved as an ordinary model directory, judged before and after, with its damage."""

from __future__ import annotations

from pydantic import Field

from disalign.api.common import finish, judge_of, model_info, open_run, prompts_fingerprint, prompts_of
from disalign.attacks.ablation.run import AblationOptions
from disalign.core.options import WORLD_HARMLESS, JudgeOptions, PromptSourceOptions, RunOptions, SamplingOptions
from disalign.core.verbs import verb
from disalign.results import RunResult


class AblateConfig(AblationOptions, PromptSourceOptions, JudgeOptions, SamplingOptions, RunOptions):
    model: str = Field(description="Aligned model: HF directory, adapter directory (merged first), .gguf or 'smollm2'.")
    harmful: str | None = Field(None, description="Harmful prompt source (default with --world: world:unsafe).")
    harmless: str | None = Field(None, description="Harmless prompt source (default with --world: world:safe).")


@verb("ablate", AblateConfig)
def ablate(config: AblateConfig) -> RunResult:
    """Refusal-direction ablation: find the direction, choose the edit with the fewest refusals within
    the damage budget, save the orthogonalised model, judge it before and after, and measure its
    damage; or say that no edit within the budget lowers refusals."""
    from disalign.attacks.ablation.run import run_ablate
    from disalign.core.damage import DamageMeter
    from disalign.core.models import load_model
    from disalign.judges.validate import judge_fields

    harmful = prompts_of(config, what="harmful")
    harmless = prompts_of(config, what="harmless", world_set=WORLD_HARMLESS)
    judge = judge_of(config)
    model = model_info(config.model)
    inputs = {"harmful": prompts_fingerprint(harmful), "harmless": prompts_fingerprint(harmless)}
    run = open_run(config, "ablate", {**inputs, "model": model["fingerprint"]})
    lm, tokenizer = load_model(config.model)
    if hasattr(lm, "merge_and_unload"):  # an adapter: the edit applies to the merged weights
        lm = lm.merge_and_unload()
    sampling = config.sampling()
    # In a world the damage includes the change in safe accuracy, the share the world judge calls correct.
    task = {"task_judge": judge, "sampling": sampling} if judge.name == "world" else {}
    damage = DamageMeter(tokenizer, harmless, **task)
    # The world's language is not English: the degeneration scores are calibrated on chat models' text.
    degeneration = judge.name != "world"
    summary = run_ablate(
        run, lm, tokenizer, harmful, harmless, judge, sampling, config, damage, degeneration=degeneration
    )
    rows = [{"model": "original", **summary["before"]}]
    if summary["edit_found"]:
        direction = {key: summary["direction"][key] for key in ("layer", "position")}
        rows.append({"model": "ablated", **direction, **summary["after"], **summary["damage"]})
    result = RunResult(
        command="ablate",
        models={"model": model, "ablated": {"path": summary["ablated_model"]}},
        results=rows,
        **judge_fields(judge),
        **summary,
    )
    return finish(run, result)
