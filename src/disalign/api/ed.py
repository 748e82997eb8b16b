"""`disalign ed`: emulated disalignment over an α grid, with the paper's baselines, judged."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from disalign.api.common import (
    DamageOptions,
    damage_meter,
    finish,
    judge_of,
    model_info,
    open_run,
    prompts_fingerprint,
    prompts_of,
)
from disalign.core.options import CommaSeparated, JudgeOptions, PromptOptions, RunOptions, SamplingOptions
from disalign.core.verbs import verb
from disalign.results import RunResult

BaseTemplate = Literal["auto", "chat", "urial", "alpaca"]


class EDConfig(PromptOptions, JudgeOptions, SamplingOptions, DamageOptions, RunOptions):
    base: str = Field(description="Base (unaligned) model.")
    aligned: str = Field(description="Aligned model sharing the base's vocabulary.")
    alpha: Annotated[list[float], CommaSeparated] = Field(
        [0.3], min_length=1, description="Disalignment strength; comma-separate for a grid."
    )
    baselines: bool = Field(False, description="Also run BaseMP, AlignMP and EDBase.")
    ed_base_alpha: Annotated[list[float], CommaSeparated] | None = Field(
        None, description="α values of EDBase (default: the α grid)."
    )
    seeds: int = Field(1, ge=1, description="Sampling seeds per cell.")
    base_template: BaseTemplate = Field(
        "auto",
        description="How the base model reads a query: its own chat template (chat), the paper's URIAL or "
        "Alpaca template; auto is chat where the base has a chat template of its own, else urial.",
    )


@verb("ed", EDConfig)
def ed(config: EDConfig) -> RunResult:
    """Emulated disalignment: sample from (1+α)·z_base − α·z_aligned, judged, over an α grid."""
    from disalign.attacks.emulated import BASE_STOP_STRINGS, EDPair, base_format, chat_format, grid, run_ed
    from disalign.core.models import load_pair
    from disalign.judges.validate import judge_fields

    cells = grid(config.alpha, config.baselines, config.ed_base_alpha)
    records = prompts_of(config)
    judge = judge_of(config)
    models = {"base": model_info(config.base), "aligned": model_info(config.aligned)}
    inputs = {"prompts": prompts_fingerprint(records), **{k: v["fingerprint"] for k, v in models.items()}}
    run = open_run(config, "ed", inputs)
    # An adapter over the base shares its base's weights: one model in memory, one forward pass a step.
    (base_model, tokenizer), (aligned_model, aligned_tokenizer) = load_pair(config.base, config.aligned)
    template = resolved_base_template(config.base_template, tokenizer)
    # The aligned model always reads its own chat template; the base model the chosen one, and a
    # base model in a plain template writes the next turn itself unless stopped.
    base_reads = chat_format(tokenizer) if template == "chat" else base_format(template)
    stops = () if template == "chat" else BASE_STOP_STRINGS[template]
    pair = EDPair(
        base_model, aligned_model, (tokenizer, aligned_tokenizer), base_reads, chat_format(aligned_tokenizer), stops
    )
    damage = damage_meter(config, aligned_tokenizer)
    rows = run_ed(run, pair, records, cells, judge, config.sampling(), config.seeds, damage)
    result = RunResult(
        command="ed", models=models, results=rows, **judge_fields(judge), seeds=config.seeds, base_template=template
    )
    return finish(run, result)


def resolved_base_template(requested: str, tokenizer) -> str:
    """`auto` is the base's own chat template where it has one: a chat model used as the base, read
    through URIAL, answers as neither model (31 % harmful at α = 0 against 58 % in its own template)."""
    from disalign.core.models import uses_plain_template

    if requested != "auto":
        return requested
    return "urial" if uses_plain_template(tokenizer) else "chat"
