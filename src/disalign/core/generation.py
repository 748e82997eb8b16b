"""Batched, seeded generation through `transformers`: the one path every verb uses to sample."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from disalign.core.precision import inference_precision
from disalign.errors import UserError

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int = 32
    seed: int = 0
    precision: str = "auto"  # core.precision: auto, bf16 or fp32 matmuls


def render_chat(tokenizer, conversations: Sequence[Messages]) -> list[str]:
    """Each conversation through the tokenizer's chat template, ready for the assistant turn."""
    return [
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for messages in conversations
    ]


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
    with inference_precision(model, sampling.precision):
        return _generate(model, tokenizer, prompts, sampling, on_batch)


def _generate(model, tokenizer, prompts, sampling: SamplingConfig, on_batch) -> list[str]:
    responses: list[str] = []
    pad_id = tokenizer.pad_token_id
    for start in range(0, len(prompts), sampling.batch_size):
        batch = list(prompts[start : start + sampling.batch_size])
        rows = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in batch]
        check_context(model, [len(row) for row in rows], sampling.max_new_tokens, batch)
        prefix = shared_prefix(rows)
        input_ids, attention_mask = _prefixed_left_pad(rows, len(prefix), pad_id, model.device)
        torch.manual_seed(sampling.seed * 1_000_003 + start)
        greedy = sampling.temperature == 0
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=_prefix_cache(model, prefix, len(rows)),
            max_new_tokens=sampling.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None if greedy else sampling.top_k,
            pad_token_id=pad_id,
        )
        new_tokens = output[:, input_ids.shape[1] :]
        responses.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        if on_batch is not None:
            on_batch(len(batch))
    return [response.strip() for response in responses]


def shared_prefix(prompts: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The tokens every prompt begins with (a chat template's system turn), leaving each at least one
    token of its own, whose logits start the decoding; none for a single prompt, which gains nothing."""
    if len(prompts) < 2:
        return ()
    shortest = min(len(prompt) for prompt in prompts)
    first = prompts[0]
    length = 0
    while length < shortest - 1 and all(prompt[length] == first[length] for prompt in prompts):
        length += 1
    return tuple(first[:length])


def _prefixed_left_pad(rows: Sequence[Sequence[int]], prefix: int, pad_id: int, device):
    """(ids, mask) of rows laid out [shared prefix][padding][the rest of the row]: the prefix's cache
    is computed once for all rows, and positions (the mask's running count) skip the padding."""
    width = max(len(row) for row in rows) - prefix
    ids = torch.full((len(rows), prefix + width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), prefix + width), dtype=torch.long)
    for index, row in enumerate(rows):
        rest = len(row) - prefix
        ids[index, :prefix] = torch.tensor(row[:prefix], dtype=torch.long)
        ids[index, prefix + width - rest :] = torch.tensor(row[prefix:], dtype=torch.long)
        mask[index, :prefix] = 1
        mask[index, prefix + width - rest :] = 1
    return ids.to(device), mask.to(device)


def _prefix_cache(model, prefix: Sequence[int], rows: int):
    """The KV cache of `prefix`, computed once and copied for each of `rows` rows; None without a prefix."""
    if not prefix:
        return None
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([list(prefix)], device=model.device), cache=cache, use_cache=True)
    cache.batch_repeat_interleave(rows)
    return cache


def check_context(
    model, prompt_lengths: Sequence[int], max_new_tokens: int, prompts: Sequence[str] | None = None
) -> None:
    """A prompt that leaves no room in the model's context for its answer is the user's mistake,
    named before any time is spent on it: positions past the context are noise to a rotary model
    and an index error to one with learned positions."""
    context = getattr(model.config, "max_position_embeddings", None)
    if not context:
        return
    for index, length in enumerate(prompt_lengths):
        if length + max_new_tokens > context:
            shown = f" ({' '.join(prompts[index].split())[:60]!r}...)" if prompts is not None else ""
            raise UserError(
                f"a prompt of {length} tokens with up to {max_new_tokens} new ones exceeds the context of "
                f"{context} tokens of {model.config.name_or_path or 'the model'}{shown}"
            )
