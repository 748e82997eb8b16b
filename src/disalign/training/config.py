"""Settings shared by every fine-tuning in disalign: attacks, safety alignment, proxies for BEB."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=1, ge=1)
    lr: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=8, ge=1)
    lora: bool = False
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_targets: list[str] | None = None  # None: peft's default modules for the architecture
    seed: int = 42
    max_length: int = Field(default=512, ge=2)
    weight_decay: float = Field(default=0.0, ge=0)
    gradient_checkpointing: bool = False  # trades a third more compute for activation memory (large models)
