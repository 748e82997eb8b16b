"""`disalign align`: safety-tune any causal LM (SFT, DPO or unlearning; LoRA or full) into a model
or adapter that every other verb accepts."""

from __future__ import annotations

from pydantic import Field

from disalign.alignment.config import AlignConfig
from disalign.api.common import (
    finish,
    model_info,
    open_run,
    prompts_fingerprint,
    prompts_of,
    trained_model,
    training_row,
)
from disalign.core.options import PromptOptions, RunOptions
from disalign.core.runs import fingerprint_path
from disalign.core.verbs import verb
from disalign.errors import UserError
from disalign.results import RunResult


class AlignVerbConfig(AlignConfig, PromptOptions, RunOptions):
    """The alignment's training settings (`AlignConfig`, read by the trainer as they are) with the verb's
    model, prompts and run."""

    model: str = Field(description="Model to align: HF directory, adapter directory, .gguf file or 'smollm2'.")
    benign: str | None = Field(
        None,
        description="Benign prompts to keep answering (a file or named set; default: 198 built-in everyday "
        "instructions and 45 that only sound sensitive); a `response` column is used as the answer, else the "
        "model's own greedy answer.",
    )
    judge: str = Field("keyword", description="Judge that finds refusals among the model's own answers.")


@verb("align", AlignVerbConfig)
def align(config: AlignVerbConfig) -> RunResult:
    """Safety-tune a model: refusals on harmful prompts, its own answers on benign ones; writes RUN/model."""
    from disalign.alignment import run_align
    from disalign.alignment.instructions import instruction_records
    from disalign.judges import get_judge
    from disalign.judges.validate import judge_fields

    if config.out is None:
        raise UserError("out: align writes a model; give a run directory")
    harmful = prompts_of(config)
    benign = prompts_of(config, config.benign) if config.benign else instruction_records()
    model = model_info(config.model)
    inputs = {
        "prompts": prompts_fingerprint(harmful),
        "benign": prompts_fingerprint(benign),
        "model": model["fingerprint"],
    }
    if config.refusals is not None:
        inputs["refusals"] = fingerprint_path(config.refusals)
    if config.lora_targets:
        from disalign.core.models import check_module_names

        check_module_names(config.model, config.lora_targets, "--lora-target")
    judge = get_judge(config.judge)
    run = open_run(config, "align", inputs)
    trained = trained_model(run, lambda out_dir: run_align(config.model, harmful, benign, config, out_dir, judge=judge))
    row = training_row(config.method, config.lora, trained)
    result = RunResult(
        command="align",
        models={"base": model, "aligned": {"path": str(trained.model_dir), "lora": config.lora}},
        results=[row],
        **judge_fields(judge),
        training=trained.as_dict(),
        edit_audit=trained.extra.get("edit_audit"),
    )
    return finish(run, result)
