"""The damage an attack does beside the harm it unlocks, reported by every attack.

    kl_first_token       KL(original ‖ attacked) of the first response token on harmless prompts
    kl_mean_32           the same, averaged over the first 32 tokens of the original's own greedy
                         responses (each prompt weighs the same)
    safe_accuracy_delta  accuracy(attacked) − accuracy(original) from a caller-supplied accuracy
                         function (the world's safe accuracy); None where no task exists

Both models are anything with a causal-LM forward over the same vocabulary: full models and
PEFT-wrapped adapters alike. An edit that removes refusals by wrecking the model shows here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from disalign.core.evaluate import messages_of
from disalign.core.generation import SamplingConfig, check_context, generate, render_chat
from disalign.core.logprobs import kl_per_position
from disalign.data import PromptRecord
from disalign.errors import UserError

KL_TOKENS = 32

Accuracy = Callable[[Any], float | None]  # model -> task accuracy (None: undecided)
Respond = Callable[[Any, Sequence[PromptRecord]], list[str]]  # (model, prompts) -> responses


def damage(
    original,
    attacked,
    tokenizer,
    harmless: Sequence[PromptRecord],
    *,
    accuracy: Accuracy | None = None,
    batch_size: int = 16,
) -> dict[str, float | None]:
    """`{"kl_first_token", "kl_mean_32", "safe_accuracy_delta"}` of `attacked` against `original`.

    The KL is read along the original's greedy responses (at most 32 new tokens, up to and
    including its end-of-turn token), so both models are scored on the same prefixes."""
    if not harmless:
        raise UserError("damage: no harmless prompts")
    per_prompt_first: list[float] = []
    per_prompt_mean: list[float] = []
    rendered = render_chat(tokenizer, [messages_of(record) for record in harmless])
    for start in range(0, len(rendered), batch_size):
        rows = _greedy_continuations(original, tokenizer, rendered[start : start + batch_size], KL_TOKENS)
        ids, mask = _right_padded([prompt + response for prompt, response in rows], tokenizer.pad_token_id)
        device = _device(original)
        with torch.no_grad():
            try:
                kl = kl_per_position(original, attacked, ids.to(device), mask.to(device)).cpu()
            except ValueError as err:  # different vocabularies
                raise UserError(f"damage: the attacked model does not match the original ({err})") from None
        for row, (prompt, response) in enumerate(rows):
            # kl[:, t] is the KL of the prediction after ids[:t + 1]: the first response token is at len(prompt) - 1.
            scored = kl[row, len(prompt) - 1 : len(prompt) - 1 + len(response)]
            per_prompt_first.append(float(scored[0]))
            per_prompt_mean.append(float(scored.mean()))
    delta = None
    if accuracy is not None:
        before, after = accuracy(original), accuracy(attacked)
        delta = None if before is None or after is None else after - before
    return {
        "kl_first_token": sum(per_prompt_first) / len(per_prompt_first),
        "kl_mean_32": sum(per_prompt_mean) / len(per_prompt_mean),
        "safe_accuracy_delta": delta,
    }


def judged_accuracy(
    tokenizer, prompts: Sequence[PromptRecord], judge, sampling: SamplingConfig, respond: Respond | None = None
) -> Accuracy:
    """model -> share of `prompts` whose responses `judge` calls `correct` (the world judge's safe
    accuracy). `respond(model, prompts)` answers them; by default the model's chat template and
    `generate`, for models that are not plain causal LMs (an emulated one) the caller's own."""

    def chat(model, records: Sequence[PromptRecord]) -> list[str]:
        return generate(model, tokenizer, render_chat(tokenizer, [messages_of(p) for p in records]), sampling)

    def accuracy(model) -> float | None:
        responses = (respond or chat)(model, prompts)
        verdicts = judge.judge([p.prompt for p in prompts], responses)
        decided = [v.correct for v in verdicts if v.correct is not None]
        return sum(decided) / len(decided) if decided else None

    return accuracy


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _eos_ids(model, tokenizer) -> set[int]:
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is None:
        configured = tokenizer.eos_token_id
    return set(configured if isinstance(configured, list) else [configured]) - {None}


@torch.no_grad()
def _greedy_continuations(model, tokenizer, prompts: list[str], tokens: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, greedy response ids up to and including the first end token) per prompt."""
    tokenizer.padding_side = "left"
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    check_context(model, encoded["attention_mask"].sum(-1).tolist(), tokens, prompts)
    device = _device(model)
    output = model.generate(
        input_ids=encoded["input_ids"].to(device),
        attention_mask=encoded["attention_mask"].to(device),
        max_new_tokens=tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=tokenizer.pad_token_id,
    ).cpu()
    eos = _eos_ids(model, tokenizer)
    rows = []
    width = encoded["input_ids"].shape[1]
    for row in range(len(prompts)):
        prompt = encoded["input_ids"][row][encoded["attention_mask"][row].bool()].tolist()
        response = []
        for token in output[row, width:].tolist():
            response.append(token)
            if token in eos:
                break
        rows.append((prompt, response))
    return rows


def _right_padded(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
    return ids, mask
