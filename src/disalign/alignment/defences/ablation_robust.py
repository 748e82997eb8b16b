"""Ablation-robust safety tuning: refusal-direction ablation during training (DeepRefusal, Xie et al.
2025, "Beyond Surface Alignment: Rebuilding LLMs Safety Mechanism via Probabilistically Ablating
Refusal Direction"; ReFAT, Yu et al. 2025, "Robust LLM Safeguarding via Refusal Feature Adversarial
Training").

The refusal direction of each layer is the difference of the mean residual stream entering it at
the last prompt token, harmful − benign prompts, normalised (Arditi et al. 2024), measured on the
model being trained and measured again every `refresh_steps` steps, as ReFAT recomputes its refusal
feature while the model moves. In each step, each harmful row is ablated with probability
`ablation_probability` (ReFAT: 0.5): one layer's direction, drawn at random, is projected out of the
residual stream from a random layer on (the embeddings included when it is the first) and from a
random token depth on, the prompt's last token at the latest (DeepRefusal's random layers and
positions). The model is trained to refuse anyway, so refusing no longer runs through that one
direction, which is what the ablation attack removes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import numpy as np
import torch
from pydantic import Field

from disalign.alignment.defences.base import Defence, DefenceSettings
from disalign.alignment.defences.data import DefenceData
from disalign.core.activations import Positions, capture, decoder_layers, encode
from disalign.core.logprobs import IGNORE


class AblationRobustSettings(DefenceSettings):
    ablation_probability: float = Field(
        0.5, ge=0, le=1, description="ablation-robust: chance a harmful row is trained under ablation (ReFAT: 0.5)."
    )
    refresh_steps: int = Field(
        10, ge=1, description="ablation-robust: steps between two measurements of the refusal directions."
    )
    direction_prompts: int = Field(
        64, ge=2, description="ablation-robust: prompts of each role the directions are measured on."
    )


class AblationRobust(Defence):
    name = "ablation-robust"
    paper = "Xie et al. 2025 (DeepRefusal); Yu et al. 2025 (ReFAT)"
    settings_class = AblationRobustSettings
    settings: AblationRobustSettings

    def prepare(self, model, tokenizer, data: DefenceData, reference=None) -> None:
        from disalign.core.generation import render_chat

        n = self.settings.direction_prompts
        harmful = render_chat(tokenizer, [h.messages for h in data.harmful[:n]])
        benign = render_chat(tokenizer, [b.messages for b in data.benign[:n]])
        if not benign:
            from disalign.errors import UserError

            raise UserError("ablation-robust needs benign prompts to measure the refusal direction against")
        self.batches = (encode(tokenizer, harmful), encode(tokenizer, benign))
        self.rng = np.random.default_rng([self.settings.seed, 31])
        self.directions: torch.Tensor | None = None
        self.ablated_rows = 0

    def refusal_directions(self, model) -> torch.Tensor:
        """(n, d): the unit difference of means, harmful − benign, at the last prompt token, of each layer
        where the two differ. Where every prompt ends in the same tokens (a chat template's assistant
        marker), the first layer reads the same embedding for both roles and has no direction."""
        layers = decoder_layers(model)
        harmful, benign = (capture(model, b, layers, Positions("prompt", 1), read="input") for b in self.batches)
        difference = harmful.mean(0) - benign.mean(0)
        norms = difference.norm(dim=-1, keepdim=True)
        return (difference / norms.clamp(min=1e-12))[norms.flatten() > 1e-6 * norms.max()]

    @contextmanager
    def forward_context(self, model, batch, step: int) -> Iterator[None]:
        if self.directions is None or step % self.settings.refresh_steps == 0:
            self.directions = self.refusal_directions(model)
        chosen = batch["harmful"] & torch.from_numpy(
            self.rng.random(len(batch["harmful"])) < self.settings.ablation_probability
        )
        if not chosen.any():
            yield
            return
        self.ablated_rows += int(chosen.sum())
        layers = decoder_layers(model)
        n_layers, width = len(layers), batch["ids"].shape[1]
        # Per row: the direction ablated, the first layer written without it, the first position ablated.
        direction = torch.zeros(len(chosen), self.directions.shape[-1])
        first_layer = torch.full((len(chosen),), n_layers)
        mask = torch.zeros(len(chosen), width, 1)
        first_response = (batch["labels"] != IGNORE).float().argmax(-1)
        for row in chosen.nonzero().flatten().tolist():
            direction[row] = self.directions[int(self.rng.integers(len(self.directions)))]
            first_layer[row] = int(self.rng.integers(n_layers))
            start = int(self.rng.integers(int(first_response[row])))
            mask[row, start:] = 1

        def ablate(layer: int):
            keep = (first_layer <= layer).float().view(-1, 1, 1) * mask

            def hook(_module, _inputs, output):
                hidden = output[0] if isinstance(output, tuple) else output
                r = direction.to(hidden).unsqueeze(1)
                ablated = hidden - keep.to(hidden) * (hidden * r).sum(-1, keepdim=True) * r
                return (ablated, *output[1:]) if isinstance(output, tuple) else ablated

            return hook

        with ExitStack() as stack:
            # What layer i writes is what layer i + 1 reads; the embeddings are what layer 0 reads.
            embeddings = model.get_input_embeddings()
            handle = embeddings.register_forward_hook(ablate(0))
            stack.callback(handle.remove)
            for index, layer in enumerate(layers):
                handle = layer.register_forward_hook(ablate(index + 1))
                stack.callback(handle.remove)
            yield

    def summary(self) -> dict:
        return {"ablated_rows": getattr(self, "ablated_rows", 0)}
