"""Settings of safety alignment: the trainer's, plus the method and its data."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from disalign.training import TrainingConfig

ALIGN_METHODS = ("sft", "dpo", "unlearn")


class AlignConfig(TrainingConfig):
    method: Literal["sft", "dpo", "unlearn"] = Field(
        default="sft",
        description="sft: learn refusals and the model's own benign answers; dpo: prefer them over the model's "
        "harmful answers (and benign answers over refusals); unlearn: sft minus capped NLL on the harmful answers",
    )
    epochs: int = Field(default=3, ge=1)
    lr: float = Field(default=2e-4, gt=0, description="learning rate (the default suits LoRA; full: about 2e-5)")
    batch_size: int = Field(default=8, ge=1)
    lora: bool = True
    refusals: Path | None = Field(default=None, description="text file of refusals, one per line (default: built in)")
    answer_tokens: int = Field(default=128, ge=1, description="longest self-generated answer, in tokens")
    beta: float = Field(default=0.1, gt=0, description="DPO β")
    nll_weight: float = Field(default=1.0, ge=0, description="DPO: NLL term on the chosen response")
    unlearn_weight: float = Field(default=0.1, ge=0, description="unlearn: weight of the ascent on harmful answers")
    unlearn_ceiling: float = Field(default=5.0, gt=0, description="unlearn: NLL per token beyond which ascent stops")
