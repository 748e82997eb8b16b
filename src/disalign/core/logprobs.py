"""Log-probabilities under a causal LM, and the KL divergence between two of them.

Training (DPO, unlearning), Behavior Expectation Bounds, the depth-of-alignment analysis and
the damage measure of every attack read models through these few functions.

Conventions: `ids` is (batch, length); `labels` has the same shape and holds -100 where a token
is not scored (prompt, padding). Rows are right-padded unless an `attention_mask` says otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def next_token_logprobs(model, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, length - 1, vocab) log-softmax of the next-token distribution after each prefix, in fp32."""
    logits = model(input_ids=ids, attention_mask=attention_mask).logits[:, :-1]
    return F.log_softmax(logits.float(), dim=-1)


def token_logprobs(model, ids: torch.Tensor, labels: torch.Tensor, attention_mask=None) -> torch.Tensor:
    """(batch, length - 1): log p(label_t | ids_<t) where labelled, 0 elsewhere."""
    logp = next_token_logprobs(model, ids, attention_mask)
    targets = labels[:, 1:]
    scored = targets != IGNORE
    picked = torch.gather(logp, 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * scored


def sequence_logprob(model, ids: torch.Tensor, labels: torch.Tensor, attention_mask=None) -> torch.Tensor:
    """Summed log-probability of the labelled tokens of each row."""
    return token_logprobs(model, ids, labels, attention_mask).sum(-1)


def kl_per_position(p_model, q_model, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, length - 1): KL(p ‖ q) between the two models' next-token distributions after each
    prefix of `ids`. Both models must number the vocabulary the same way."""
    p_logp = next_token_logprobs(p_model, ids, attention_mask)
    q_logp = next_token_logprobs(q_model, ids, attention_mask)
    if p_logp.shape[-1] != q_logp.shape[-1]:
        raise ValueError(f"vocabulary sizes differ: {p_logp.shape[-1]} and {q_logp.shape[-1]}")
    return (p_logp.exp() * (p_logp - q_logp)).sum(-1)
