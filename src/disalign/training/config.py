"""Settings shared by every fine-tuning in disalign: attacks, safety alignment, proxies for BEB."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from disalign.core.options import CommaSeparated, Seed
from disalign.core.precision import Precision


class TrainingConfig(BaseModel):
    """How a model is fine-tuned. Verb configs inherit these fields, so the trainer reads the user's config as
    is; three are spelled on the command line as the verbs have always spelled them (the aliases)."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True, allow_inf_nan=False)

    epochs: int = Field(default=1, ge=1, description="Training epochs.")
    lr: float = Field(default=5e-5, gt=0, description="Learning rate.")
    batch_size: int = Field(default=8, ge=1, alias="train_batch_size", description="Training batch size.")
    lora: bool = Field(False, description="Train a LoRA adapter instead of every weight.")
    lora_r: int = Field(default=8, ge=1, description="LoRA rank.")
    lora_alpha: int | None = Field(default=16, ge=1, description="LoRA alpha (none: twice the rank).")
    lora_targets: Annotated[list[str], CommaSeparated] | None = Field(
        None,
        alias="lora_target",
        description="LoRA target module name (repeatable; default: peft's for the architecture).",
    )
    seed: Seed = Field(default=42, alias="train_seed", description="Training seed.")
    max_length: int = Field(default=512, ge=2, description="Longest training example in tokens.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: a third more compute, far less memory."
    )
    precision: Precision = Field(
        "auto",
        description="Training matmuls in bf16 (autocast; weights and optimizer stay fp32) or fp32; auto is bf16 "
        "where the CPU multiplies bf16 natively and the model is at least 512 wide.",
    )

    def trainer_options(self, out_dir: str | Path, n_rows: int) -> dict[str, Any]:
        """The `transformers.TrainingArguments` every disalign trainer shares (TRL's configs extend them):
        this config's schedule and seed, on the CPU in fp32, a log line per step, no checkpoints (the
        caller saves the model)."""
        return dict(
            output_dir=str(Path(out_dir) / "trainer"),
            num_train_epochs=self.epochs,
            learning_rate=self.lr,
            per_device_train_batch_size=min(self.batch_size, n_rows),
            weight_decay=self.weight_decay,
            seed=self.seed,
            data_seed=self.seed,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            logging_strategy="steps",
            logging_steps=1,
            disable_tqdm=True,
            dataloader_num_workers=0,
            # fp32 unless the trainer turns bf16 on for a model and CPU that gain from it (sft.mixed_precision):
            # bf16 is emulated, several times slower, on a CPU without native bf16 (benchmarks/bench_finetune.py).
            bf16=False,
            fp16=False,
            activation_checkpointing=self.gradient_checkpointing,
        )


class DPOSettings(TrainingConfig):
    """What `training.dpo` reads beside the trainer's settings, as TRL's DPOConfig extends TrainingArguments."""

    beta: float = Field(default=0.1, gt=0, description="DPO β.")
    nll_weight: float = Field(default=1.0, ge=0, description="DPO: weight of the NLL term on the chosen response.")


class UnlearnSettings(TrainingConfig):
    """What `training.unlearn` reads beside the trainer's settings."""

    unlearn_weight: float = Field(default=0.1, ge=0, description="Unlearn: weight of the ascent on harmful answers.")
    unlearn_ceiling: float = Field(default=5.0, gt=0, description="Unlearn: NLL per token beyond which ascent stops.")
