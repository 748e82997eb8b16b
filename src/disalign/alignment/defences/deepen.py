"""Deeper alignment: safety-recovery examples (Qi et al. 2024, ICLR 2025, "Safety Alignment Should Be
Made More Than Just a Few Tokens Deep", §3).

A harmful prompt is followed by the first k tokens of a harmful answer and then the refusal; only
the refusal is trained, so the model learns to return to refusal after it has started to comply,
not only at the first token. As in the paper's code, half of the harmful prompts (`recovery_share`)
become recovery examples with k drawn uniformly from 1 to min(100, the answer's length), the other
half stay plain refusals, and the benign prompts keep their answers (the paper's utility anchor).
A harmful prompt with no harmful answer stays a plain refusal.

`--constrained` trains with the paper's token-wise constrained objective (§4, their code's soft SFT)
instead of plain cross-entropy: each token's loss is weighted by 2·(1 − σ(β_t·(log π − log π_start))),
π_start the model as training starts, so tokens that already moved far from it stop being pushed;
β is 0.5 for the first token, 2 for tokens 2–5 and 0.1 after (their β = 0.1 with factors 5 and 20),
which keeps the first tokens close and lets the later ones move, the reverse of shallow alignment.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from disalign.alignment.defences.base import Defence, DefenceSettings
from disalign.alignment.defences.data import DefenceData, Row, answer_ids, benign_rows, make_row
from disalign.core.logprobs import IGNORE, token_logprobs


class DeepenSettings(DefenceSettings):
    recovery_share: float = Field(
        0.5, ge=0, le=1, description="deepen: share of harmful prompts trained as recovery examples (paper: 0.5)."
    )
    max_prefix_tokens: int = Field(
        100, ge=1, description="deepen: most harmful-answer tokens before the refusal (paper: 100)."
    )
    constrained: bool = Field(False, description="deepen: the paper's token-wise constrained loss to the start model.")
    constraint_beta: float = Field(0.1, gt=0, le=10, description="deepen --constrained: β after token 5 (paper: 0.1).")
    constraint_early_factor: float = Field(
        20, gt=0, le=1000, description="deepen --constrained: β of tokens 2–5 as a multiple of β (paper: 20)."
    )
    constraint_first_factor: float = Field(
        5, gt=0, le=1000, description="deepen --constrained: β of the first token as a multiple of β (paper: 5)."
    )


class Deepen(Defence):
    name = "deepen"
    paper = "Qi et al. 2024 (ICLR 2025), Safety Alignment Should Be Made More Than Just a Few Tokens Deep"
    settings_class = DeepenSettings
    needs_harmful_answers: ClassVar[bool] = True
    settings: DeepenSettings
    EARLY_TOKENS = 5

    @property
    def needs_reference(self) -> bool:  # type: ignore[override]
        return self.settings.constrained

    def rows(self, data: DefenceData, tokenizer, rng: np.random.Generator) -> list[Row]:
        rows, recovered = [], 0
        for harmful in data.harmful:
            prefix: list[int] = []
            if harmful.answer and rng.random() < self.settings.recovery_share:
                answer = answer_ids(tokenizer, harmful.answer)
                if answer:
                    k = int(rng.integers(1, min(self.settings.max_prefix_tokens, len(answer)) + 1))
                    prefix, recovered = answer[:k], recovered + 1
            rows.append(make_row(tokenizer, harmful.messages, harmful.refusal, True, harmful.origin, prefix))
        self.recovery_examples = recovered
        return rows + benign_rows(data, tokenizer)

    def prepare(self, model, tokenizer, data, reference=None) -> None:
        self.reference = reference

    def loss(self, model, batch):
        if not self.settings.constrained:
            return super().loss(model, batch)
        logp = token_logprobs(model, batch["ids"], batch["labels"], batch["mask"])
        with torch.no_grad():
            reference = token_logprobs(self.reference, batch["ids"], batch["labels"], batch["mask"])
        scored = batch["labels"][:, 1:] != IGNORE
        beta = self._betas(scored)
        weight = (2 * (1 - torch.sigmoid(beta * (logp - reference)))).clamp(min=1e-3).detach()
        return -(weight * logp * scored).sum() / scored.sum().clamp(min=1)

    def _betas(self, scored: torch.Tensor) -> torch.Tensor:
        """Each scored token's β by its place in the answer (first, 2–5, later)."""
        s = self.settings
        place = scored.cumsum(-1)
        beta = torch.full(scored.shape, s.constraint_beta)
        beta[place <= self.EARLY_TOKENS] = s.constraint_beta * s.constraint_early_factor
        beta[place == 1] = s.constraint_beta * s.constraint_first_factor
        return beta

    def summary(self) -> dict:
        return {"recovery_examples": getattr(self, "recovery_examples", 0)}
