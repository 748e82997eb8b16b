"""Batched, seeded generation through `transformers`: the one path every verb uses to sample."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int = 32
    seed: int = 0


def render_chat(tokenizer, conversations: Sequence[Messages]) -> list[str]:
    """Each conversation through the tokenizer's chat template, ready for the assistant turn."""
    return [
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for messages in conversations
    ]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    sampling: SamplingConfig,
    *,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Continue already-rendered prompts; returns only the new text, special tokens removed.

    Prompts are left-padded and processed in batches of `sampling.batch_size`; the seed is
    set per batch, so a resumed run reproduces the batches it had not finished.
    """
    tokenizer.padding_side = "left"
    responses: list[str] = []
    for start in range(0, len(prompts), sampling.batch_size):
        batch = list(prompts[start : start + sampling.batch_size])
        encoded = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = {key: value.to(model.device) for key, value in encoded.items()}
        torch.manual_seed(sampling.seed * 1_000_003 + start)
        greedy = sampling.temperature == 0
        output = model.generate(
            **encoded,
            max_new_tokens=sampling.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None if greedy else sampling.top_k,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        responses.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        if on_batch is not None:
            on_batch(len(batch))
    return [response.strip() for response in responses]
