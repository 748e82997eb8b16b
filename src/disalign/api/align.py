"""`disalign align`: safety-tune any causal LM (SFT, DPO or unlearning; LoRA or full) into a model
or adapter that every other verb accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from disalign.api.common import finish, model_info, open_run, prompts_fingerprint, prompts_of
from disalign.core.options import PromptOptions, RunOptions, comma_list
from disalign.core.runs import fingerprint_path
from disalign.core.verbs import verb
from disalign.errors import UserError
from disalign.results import RunResult


class AlignVerbConfig(PromptOptions, RunOptions):
    model: str = Field(description="Model to align: HF directory, adapter directory, .gguf file or 'smollm2'.")
    prompts: str = Field(description="Harmful prompts to refuse: a file, a folder or a named set.")
    benign: str | None = Field(
        None,
        description="Benign prompts to keep answering (a file or named set; default: 198 built-in everyday "
        "instructions and 45 that only sound sensitive); a `response` column is used as the answer, else the "
        "model's own greedy answer.",
    )
    method: Literal["sft", "dpo", "unlearn"] = Field(
        "sft", description="sft, dpo (prefer refusals over the model's harmful answers) or unlearn."
    )
    lora: bool = Field(True, description="Train a LoRA adapter (--no-lora: every weight).")
    lora_target: list[str] = Field(
        default_factory=list, description="LoRA target module name (repeatable; default: peft's for the architecture)."
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    epochs: int = Field(3, ge=1, description="Training epochs.")
    lr: float = Field(2e-4, gt=0, description="Learning rate (2e-4 suits LoRA; full fine-tuning wants about 2e-5).")
    train_batch_size: int = Field(8, ge=1, description="Training batch size.")
    max_length: int = Field(512, ge=2, description="Longest training example in tokens.")
    refusals: Path | None = Field(None, description="Text file of refusals, one per line (default: built in).")
    answer_tokens: int = Field(128, ge=1, description="Longest self-generated benign answer, in tokens.")
    beta: float = Field(0.1, gt=0, description="DPO β.")
    nll_weight: float = Field(1.0, ge=0, description="DPO: weight of the NLL term on the chosen response.")
    unlearn_weight: float = Field(0.1, ge=0, description="Unlearn: weight of the ascent on harmful answers.")
    unlearn_ceiling: float = Field(5.0, gt=0, description="Unlearn: NLL per token beyond which ascent stops.")
    judge: str = Field("keyword", description="Judge that finds refusals among the model's own answers.")
    train_seed: int = Field(42, description="Training seed (also picks the refusal template per prompt).")

    @field_validator("lora_target", mode="before")
    @classmethod
    def _list(cls, value):
        return comma_list(value)


@verb("align", AlignVerbConfig)
def align(config: AlignVerbConfig) -> RunResult:
    """Safety-tune a model: refusals on harmful prompts, its own answers on benign ones; writes RUN/model."""
    from disalign.alignment import AlignConfig
    from disalign.alignment import run_align
    from disalign.alignment.instructions import instruction_records
    from disalign.judges import get_judge
    from disalign.judges.validate import judge_fields
    from disalign.training import RESULT, FinetuneResult

    if config.out is None:
        raise UserError("out: align writes a model; give a run directory")
    training = AlignConfig(
        method=config.method,
        lora=config.lora,
        lora_r=config.lora_r,
        lora_alpha=2 * config.lora_r,
        lora_targets=config.lora_target or None,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.train_batch_size,
        max_length=config.max_length,
        seed=config.train_seed,
        refusals=config.refusals,
        answer_tokens=config.answer_tokens,
        beta=config.beta,
        nll_weight=config.nll_weight,
        unlearn_weight=config.unlearn_weight,
        unlearn_ceiling=config.unlearn_ceiling,
    )
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
    run = open_run(config, "align", inputs)
    judge = get_judge(config.judge)
    out_dir = run.file("model").parent
    if (out_dir / RESULT).is_file() and (out_dir / "model").is_dir():
        import json

        trained = FinetuneResult(**{**json.loads((out_dir / RESULT).read_text()), "model_dir": out_dir / "model"})
    else:
        trained = run_align(config.model, harmful, benign, training, out_dir, judge=judge)
    row = {
        "method": config.method,
        "lora": config.lora,
        "n": trained.n_examples,
        **trained.extra.get("data", {}),
        "final_loss": (trained.losses or [None])[-1],
        "seconds": round(trained.seconds, 1),
        "tokens_per_second": round(trained.tokens_per_second, 1),
    }
    result = RunResult(
        command="align",
        models={"base": model, "aligned": {"path": str(trained.model_dir), "lora": config.lora}},
        results=[row],
        **judge_fields(judge),
        training=trained.as_dict(),
    )
    return finish(run, result)
