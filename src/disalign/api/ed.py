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
        "Alpaca template; auto is chat with --world, else urial.",
    )


@verb("ed", EDConfig)
def ed(config: EDConfig) -> RunResult:
    """Emulated disalignment: sample from (1+α)·z_base − α·z_aligned, judged, over an α grid."""
    from disalign.attacks.emulated import BASE_STOP_STRINGS, EDPair, base_format, chat_format, grid, run_ed
    from disalign.core.models import load_model
    from disalign.judges.validate import judge_fields

    cells = grid(config.alpha, config.baselines, config.ed_base_alpha)
    records = prompts_of(config)
    judge = judge_of(config)
    models = {"base": model_info(config.base), "aligned": model_info(config.aligned)}
    inputs = {"prompts": prompts_fingerprint(records), **{k: v["fingerprint"] for k, v in models.items()}}
    run = open_run(config, "ed", inputs)
    base_model, tokenizer = load_model(config.base)
    aligned_model, aligned_tokenizer = load_model(config.aligned)
    template = config.base_template
    if template == "auto":
        template = config.world_default("chat", "urial")
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
