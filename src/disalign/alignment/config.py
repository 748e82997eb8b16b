"""Settings of safety alignment: the trainer's, plus the method and its data."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from disalign.alignment.refusals import read_refusals
from disalign.core.options import Seed
from disalign.training.config import DPOSettings, UnlearnSettings

ALIGN_METHODS = ("sft", "dpo", "unlearn")


class AlignConfig(DPOSettings, UnlearnSettings):
    method: Literal["sft", "dpo", "unlearn"] = Field(
        default="sft",
        description="sft: learn refusals and the model's own benign answers; dpo: prefer them over the model's "
        "harmful answers (and benign answers over refusals); unlearn: sft minus capped NLL on the harmful answers.",
    )
    epochs: int = Field(default=3, ge=1, description="Training epochs.")
    lr: float = Field(
        default=2e-4, gt=0, description="Learning rate (2e-4 suits LoRA; full fine-tuning wants about 2e-5)."
    )
    lora: bool = Field(True, description="Train a LoRA adapter (--no-lora: every weight).")
    lora_alpha: int | None = Field(default=None, ge=1, description="LoRA alpha (default: twice the rank).")
    refusals: Path | None = Field(default=None, description="Text file of refusals, one per line (default: built in).")
    answer_tokens: int = Field(default=128, ge=1, description="Longest self-generated benign answer, in tokens.")
    seed: Seed = Field(
        default=42, alias="train_seed", description="Training seed (also picks the refusal template per prompt)."
    )

    @field_validator("refusals")
    @classmethod
    def _readable_refusals(cls, path: Path | None) -> Path | None:
        """A missing, unreadable or empty file is one line now, before any model loads or folder is claimed."""
        if path is not None:
            read_refusals(path)
        return path
