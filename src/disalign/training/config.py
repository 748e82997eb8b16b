"""Settings shared by every fine-tuning in disalign: attacks, safety alignment, proxies for BEB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
            # fp32: TRL's default bf16 is emulated on CPU, several times slower (benchmarks/bench_finetune.py).
            bf16=False,
            fp16=False,
            activation_checkpointing=self.gradient_checkpointing,
        )
