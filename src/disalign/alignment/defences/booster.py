"""Booster (Huang et al., ICLR 2025, "Booster: Tackling Harmful Fine-tuning for Large Language Models
via Attenuating Harmful Perturbation"): alignment that makes a harmful fine-tuning step less effective.

Each step minimises the alignment loss f plus λ times how much one normalised gradient step on the
harmful loss h would lower it:

    f(w) + λ · (h(w) − h(w − α · ∇h(w) / ‖∇h(w)‖))

with the first-order gradient of the official code: ∇f(w) + λ · (∇h(w) − ∇h(w − α∇h/‖∇h‖)). The
harmful loss is the NLL of harmful answers to the harmful prompts (the paper's BeaverTails harmful
pairs; here the prompt file's answers or the model's own, in a world its true outputs), one harmful
batch per step. λ = 5 and α = 0.1 are the official script's defaults (lr 5e-4 LoRA, 20 epochs on
5000 alignment and 5000 harmful examples; here `align`'s schedule).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from disalign.alignment.defences.base import Defence, DefenceSettings
from disalign.alignment.defences.data import DefenceData, Row, collate, harmful_answer_rows, refusal_rows
from disalign.errors import UserError


class BoosterSettings(DefenceSettings):
    booster_lambda: float = Field(5.0, ge=0, le=1000, description="booster: λ, weight of the attenuation (paper: 5).")
    booster_alpha: float = Field(
        0.1, gt=0, le=100, description="booster: α, norm of the simulated harmful step (paper: 0.1)."
    )


class Booster(Defence):
    name = "booster"
    paper = "Huang et al. 2025 (ICLR), Booster: Attenuating Harmful Perturbation"
    settings_class = BoosterSettings
    needs_harmful_answers: ClassVar[bool] = True
    settings: BoosterSettings

    def rows(self, data: DefenceData, tokenizer, rng: np.random.Generator) -> list[Row]:
        self.harmful_rows = harmful_answer_rows(data, tokenizer)
        if not self.harmful_rows:
            raise UserError(
                "booster needs harmful answers to the harmful prompts (a `response` or `target` column, "
                "or a model that answers some of them)"
            )
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.rng = np.random.default_rng([self.settings.seed, 37])
        self.harmful_losses: list[float] = []
        return refusal_rows(data, tokenizer)

    def _harmful_batch(self, size: int) -> dict[str, torch.Tensor]:
        picked = self.rng.choice(len(self.harmful_rows), size=min(size, len(self.harmful_rows)), replace=False)
        return collate([self.harmful_rows[i] for i in picked], self.pad)

    def backward(self, model, batch, step: int) -> torch.Tensor:
        parameters = [p for p in model.parameters() if p.requires_grad]
        harmful = self._harmful_batch(len(batch["ids"]))
        harmful_gradient = torch.autograd.grad(self.loss(model, harmful), parameters)
        norm = torch.sqrt(sum((g.float() ** 2).sum() for g in harmful_gradient)) + 1e-7
        with torch.no_grad():
            for p, g in zip(parameters, harmful_gradient, strict=True):
                p.sub_(self.settings.booster_alpha * g / norm)
        perturbed_loss = self.loss(model, harmful)
        perturbed_gradient = torch.autograd.grad(perturbed_loss, parameters)
        with torch.no_grad():
            for p, g in zip(parameters, harmful_gradient, strict=True):
                p.add_(self.settings.booster_alpha * g / norm)
        self.harmful_losses.append(float(perturbed_loss.detach()))
        loss = self.loss(model, batch)
        loss.backward()
        with torch.no_grad():
            for p, g, g_perturbed in zip(parameters, harmful_gradient, perturbed_gradient, strict=True):
                attenuation = self.settings.booster_lambda * (g - g_perturbed)
                p.grad = attenuation if p.grad is None else p.grad + attenuation
        return loss.detach()

    def summary(self) -> dict:
        return {
            "harmful_examples": len(getattr(self, "harmful_rows", [])),
            "harmful_loss_after_step": self.harmful_losses[-1] if getattr(self, "harmful_losses", None) else None,
        }
