"""Candidate refusal directions (Arditi et al. 2024): for each layer and each of the prompt's last
positions (the chat template's post-instruction tokens), the difference of the mean residual
stream entering that layer between harmful and harmless prompts, normalised."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from disalign.core.activations import decoder_layers, encode, hooked
from disalign.core.evaluate import rendered_prompts
from disalign.data import PromptRecord
from disalign.errors import UserError

MIN_PROMPTS = 8
# Post-instruction positions considered at most (Llama-3's template has five after the user turn).
MAX_POSITIONS = 5


@dataclass(frozen=True)
class Directions:
    """`vectors[l, i]`: unit direction at layer l and position −(i + 1); `norms` are the differences' lengths."""

    vectors: torch.Tensor  # (layers, positions, d)
    norms: torch.Tensor  # (layers, positions)

    @property
    def n_layers(self) -> int:
        return self.vectors.shape[0]

    @property
    def n_positions(self) -> int:
        return self.vectors.shape[1]

    def usable_layers(self) -> list[int]:
        """Layers whose directions are not degenerate: the stream entering layer 0 at the template's
        tokens is the same embedding for every prompt, so its difference of means is zero."""
        floor = 1e-6 * float(self.norms.max())
        return [layer for layer in range(self.n_layers) if float(self.norms[layer].min()) > floor]

    def get(self, layer: int, position: int = -1) -> torch.Tensor:
        """The direction at `layer` (negative counts from the end) and prompt position `position` (−1 is the last)."""
        if not -self.n_layers <= layer < self.n_layers:
            raise UserError(f"layer {layer} out of range: the model has {self.n_layers} (0..{self.n_layers - 1})")
        if not -self.n_positions <= position <= -1:
            raise UserError(f"position {position} out of range: -1..-{self.n_positions} (the prompt's last tokens)")
        return self.vectors[layer, -position - 1]


def check_prompt_set(records: Sequence[PromptRecord], what: str, minimum: int = MIN_PROMPTS) -> None:
    if len(records) < minimum:
        raise UserError(f"{what}: {len(records)} prompts, at least {minimum} are needed")


def post_instruction_positions(tokenizer, prompts: Sequence[str], limit: int = MAX_POSITIONS) -> int:
    """How many final tokens every rendered prompt shares (the template after the user's text), 1..limit."""
    rows = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    shared = min(len(row) for row in rows)
    for row in rows[1:]:
        common = 0
        while common < shared and row[-1 - common] == rows[0][-1 - common]:
            common += 1
        shared = common
    return max(1, min(shared, limit))


@torch.no_grad()
def refusal_directions(
    model,
    tokenizer,
    harmful: Sequence[PromptRecord],
    harmless: Sequence[PromptRecord],
    *,
    positions: int | None = None,
    batch_size: int = 32,
) -> Directions:
    """mean(harmful) − mean(harmless) of the residual stream entering each layer at each of the last
    `positions` prompt tokens (default: the template's post-instruction tokens)."""
    check_prompt_set(harmful, "harmful prompts")
    check_prompt_set(harmless, "harmless prompts")
    modules = decoder_layers(model)
    texts = {"harmful": rendered_prompts(tokenizer, harmful), "harmless": rendered_prompts(tokenizer, harmless)}
    everything = texts["harmful"] + texts["harmless"]
    if positions is None:
        positions = post_instruction_positions(tokenizer, everything)
    shortest = min(len(row) for row in tokenizer(everything, add_special_tokens=False)["input_ids"])
    if not 1 <= positions <= shortest:
        raise UserError(f"positions must be between 1 and {shortest} (the shortest prompt's length), not {positions}")
    means = {
        name: _last_tokens_mean(model, encode(tokenizer, prompts, batch_size=batch_size), modules, positions)
        for name, prompts in texts.items()
    }
    difference = means["harmful"] - means["harmless"]
    norms = difference.norm(dim=-1)
    return Directions(vectors=difference / norms.clamp_min(1e-12).unsqueeze(-1), norms=norms)


def _last_tokens_mean(model, batches, modules, positions: int) -> torch.Tensor:
    """(layers, positions, d): the mean over prompts of the stream entering each layer at each of the
    last `positions` prompt tokens, all read in one forward pass per batch."""
    device = next(model.parameters()).device
    sums: dict[int, torch.Tensor] = {}
    ends = torch.zeros(0, dtype=torch.long)

    def record(index: int, hidden: torch.Tensor) -> None:
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        tail = torch.stack([hidden[rows, ends - k] for k in range(1, positions + 1)], dim=1).float().sum(0).cpu()
        sums[index] = sums[index] + tail if index in sums else tail

    count = 0
    with hooked(modules, record, read="input"):
        for batch in batches:
            ends = batch.prompt_lengths.to(device)
            model(input_ids=batch.ids.to(device), attention_mask=batch.attention_mask.to(device), use_cache=False)
            count += len(batch.rows)
    return torch.stack([sums[index] for index in range(len(modules))]) / count
