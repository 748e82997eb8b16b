"""How deep alignment goes (Qi et al. 2024, "Safety alignment should be made more than just a few
tokens deep"): where in the response the aligned model differs from its base, and how much harm
returns once the first tokens of a harmful answer are already written.

Response position j is the position whose next-token distribution produces response token j
(position 0 is the last prompt token), as in `core.activations`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from disalign.core.activations import encode
from disalign.core.generation import SamplingConfig, generate
from disalign.core.logprobs import kl_per_position
from disalign.core.stats import rate_summary
from disalign.errors import UserError

PREFILL_TOKENS = (0, 1, 2, 5, 10, 20)


@torch.inference_mode()
def response_kl(
    aligned, base, tokenizer, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 32
) -> torch.Tensor:
    """(n, longest response): KL(aligned ‖ base) at each response position of each rendered prompt
    followed by its response; NaN past a row's response."""
    context = getattr(getattr(aligned, "config", None), "max_position_embeddings", None)
    batches = encode(tokenizer, prompts, responses, batch_size=batch_size, max_length=context)
    response_lengths = [int((b.lengths - b.prompt_lengths).max()) for b in batches]
    width = max(1, *response_lengths)
    result = torch.full((len(prompts), width), float("nan"))
    for batch in batches:
        kl = kl_per_position(aligned, base, batch.ids, batch.attention_mask)  # column t: after ids[: t + 1]
        for row, index in enumerate(batch.rows.tolist()):
            start = int(batch.prompt_lengths[row]) - 1
            length = max(1, int(batch.lengths[row] - batch.prompt_lengths[row]))
            result[index, :length] = kl[row, start : start + length]
    return result


def kl_profile(kl: torch.Tensor) -> dict:
    """Mean KL per response position over the rows that reach it, with their number, and the share
    of the profile's total in the first 1, 3 and 5 positions."""
    if kl.numel() == 0:
        raise UserError("no responses to measure KL on")
    reached = ~kl.isnan()
    counts = reached.sum(0)
    means = torch.where(reached, kl, 0).sum(0) / counts.clamp(min=1)
    total = float(means.sum())
    return {
        "kl": [float(m) for m in means],
        "n": [int(c) for c in counts],
        "total": total,
        **{f"share_first_{k}": float(means[:k].sum()) / total if total > 0 else None for k in (1, 3, 5)},
    }


def prefill_rates(
    model,
    tokenizer,
    prompts: Sequence[str],
    harmful_responses: Sequence[str],
    judge,
    *,
    judged_prompts: Sequence[str] | None = None,
    tokens: Sequence[int] = PREFILL_TOKENS,
    sampling: SamplingConfig = SamplingConfig(),
) -> list[dict]:
    """Harmful rate when the first k tokens of a harmful response are written for the model, for
    each k; only rows whose harmful response is longer than k count (the model must still finish it).

    `prompts` are rendered; the judge sees `judged_prompts` (the plain requests, default `prompts`)
    and the prefilled tokens followed by the model's continuation.
    """
    if len(prompts) != len(harmful_responses):
        raise UserError(f"{len(prompts)} prompts but {len(harmful_responses)} harmful responses")
    judged_prompts = list(judged_prompts if judged_prompts is not None else prompts)
    if any(k < 0 for k in tokens):
        raise UserError(f"prefill token counts must be ≥ 0, not {list(tokens)}")
    response_ids = tokenizer(list(harmful_responses), add_special_tokens=False)["input_ids"]
    rows = []
    for k in tokens:
        chosen = [i for i, ids in enumerate(response_ids) if len(ids) > k]
        if not chosen:
            rows.append({"prefill_tokens": k, **rate_summary([])})
            continue
        prefixes = [tokenizer.decode(response_ids[i][:k]) for i in chosen]
        # Token ids, not text, carry the prefix: the prompt is followed by exactly those tokens.
        prefilled = [
            tokenizer.decode(tokenizer(prompts[i], add_special_tokens=False)["input_ids"] + response_ids[i][:k])
            for i in chosen
        ]
        continuations = generate(model, tokenizer, prefilled, sampling)
        responses = [f"{prefix} {rest}".strip() for prefix, rest in zip(prefixes, continuations, strict=True)]
        verdicts = judge.judge([judged_prompts[i] for i in chosen], responses)
        rows.append({"prefill_tokens": k, **rate_summary([v.harmful for v in verdicts])})
    return rows
