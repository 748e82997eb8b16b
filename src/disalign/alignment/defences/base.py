"""The contract every defence keeps, and the settings they share.

A defence is safety fine-tuning with something added: other training rows (`deepen`, `extended`),
a change to the forward pass (`ablation-robust`) or to the gradient (`booster`). Each is one module
with a settings class (its knobs, with the paper's values where they transfer) and a `Defence`
subclass; `DEFENCES` in `defences/__init__.py` names them. The trainer (`defences/trainer.py`)
runs one loop for all of them and asks the defence only what differs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field, field_validator

from disalign.alignment.defences.data import DefenceData, Row, refusal_rows
from disalign.alignment.refusals import read_refusals
from disalign.core.options import Seed
from disalign.training.config import TrainingConfig


class DefenceSettings(TrainingConfig):
    """What every defence trains with: `align`'s defaults (LoRA, 3 epochs, lr 2e-4), so a defended
    model differs from the undefended `align` model by the defence alone."""

    epochs: int = Field(default=3, ge=1, description="Training epochs.")
    lr: float = Field(default=2e-4, gt=0, description="Peak learning rate (2e-4 suits LoRA; full wants about 2e-5).")
    lora: bool = Field(True, description="Train a LoRA adapter (--no-lora: every weight).")
    lora_alpha: int | None = Field(default=None, ge=1, description="LoRA alpha (default: twice the rank).")
    refusals: Path | None = Field(default=None, description="Text file of refusals, one per line (default: built in).")
    answer_tokens: int = Field(default=128, ge=1, description="Longest self-generated answer, in tokens.")
    seed: Seed = Field(default=42, alias="train_seed", description="Training seed (also draws the refusal per prompt).")

    @field_validator("refusals")
    @classmethod
    def _readable_refusals(cls, path: Path | None) -> Path | None:
        """A missing, unreadable or empty file is one line now, before any model loads or folder is claimed."""
        if path is not None:
            read_refusals(path)
        return path


class Defence:
    """One defence: the rows it trains on, and what it changes in a training step.

    The default is plain safety SFT on `refusal_rows` (refusals to harmful prompts, the model's own
    answers to benign ones), each step the mean token NLL of its batch."""

    name: ClassVar[str]
    paper: ClassVar[str]  # the paper the method comes from, as the README cites it
    settings_class: ClassVar[type[DefenceSettings]]
    # Whether the defence reads harmful answers (a harmful prompt answered harmfully): those cost a
    # generation pass over the harmful prompts when the prompt file has none.
    needs_harmful_answers: ClassVar[bool] = False
    # Whether `prepare` receives a frozen copy of the model as training starts.
    needs_reference: ClassVar[bool] = False

    def __init__(self, settings: DefenceSettings):
        self.settings = settings

    def rows(self, data: DefenceData, tokenizer, rng: np.random.Generator) -> list[Row]:
        return refusal_rows(data, tokenizer, rng)

    def prepare(self, model, tokenizer, data: DefenceData, reference=None) -> None:
        """Called once before training, with the model as training starts (and its frozen copy when
        `needs_reference`)."""

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["ids"], attention_mask=batch["mask"], labels=batch["labels"]).loss

    def backward(self, model, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """Leave the step's gradient in the parameters' `.grad`; returns the loss to log."""
        with self.forward_context(model, batch, step):
            loss = self.loss(model, batch)
        loss.backward()
        return loss.detach()

    @contextmanager
    def forward_context(self, model, batch: dict[str, torch.Tensor], step: int) -> Iterator[None]:
        yield

    def summary(self) -> dict:
        """What the run records about this defence beside its settings."""
        return {}
