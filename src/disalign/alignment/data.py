"""The pairs that safety tuning trains on, built from harmful and benign prompts.

harmful prompt -> chosen: a refusal (a template, chosen by seed); rejected: the model's own greedy
                  answer, unless the judge says that answer already refuses
benign prompt  -> chosen: the record's `response` field when the file has one, else the model's own
                  greedy answer, so tuning keeps what the model already does well; rejected: a
                  refusal (DPO only: over-refusal is what it must not learn)

Benign prompts whose own answer is a refusal are dropped: training on it would teach over-refusal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from disalign.alignment.config import AlignConfig
from disalign.alignment.refusals import REFUSALS, read_refusals
from disalign.data import PromptRecord
from disalign.errors import UserError
from disalign.training.preferences import Pair

RESPONSE_FIELD = "response"
_SENTENCE_END = re.compile(r"[.!?:)\]\n]")


def alignment_pairs(
    model,
    tokenizer,
    harmful: Sequence[PromptRecord],
    benign: Sequence[PromptRecord],
    config: AlignConfig,
    *,
    batch_size: int = 16,
    judge=None,
) -> tuple[list[Pair], dict[str, Any]]:
    """(pairs, counts): the training pairs, and how many prompts of each role were used or dropped.
    `judge` tells which of the model's own answers refuse (default: the `keyword` judge, whose refusal
    phrases are what must not be learnt; the `refusal` judge also counts short or off-topic answers
    as evasions, and dropped a quarter of SmolLM2's sound answers to everyday instructions)."""
    from disalign.judges import get_judge

    if not harmful:
        raise UserError("align needs harmful prompts (the model learns to refuse them)")
    refusals = read_refusals(config.refusals) if config.refusals else REFUSALS
    rng = np.random.default_rng([config.seed, 7])
    judge = judge or get_judge("keyword")
    wants_rejected = config.method != "sft"

    harmful_answers = self_answers(model, tokenizer, harmful, config, batch_size) if wants_rejected else None
    pairs: list[Pair] = []
    for i, record in enumerate(harmful):
        rejected = None
        if harmful_answers is not None and not _refuses(judge, record, harmful_answers[i]):
            rejected = harmful_answers[i]
        pairs.append(_pair(record, "harmful", refusals[rng.integers(len(refusals))], rejected))

    given = {
        r.id: str(r.extra[RESPONSE_FIELD]).strip() for r in benign if str(r.extra.get(RESPONSE_FIELD) or "").strip()
    }
    todo = [r for r in benign if r.id not in given]
    answers = dict(zip([r.id for r in todo], self_answers(model, tokenizer, todo, config, batch_size), strict=True))
    dropped = 0
    for record in benign:
        answer = given.get(record.id) or answers[record.id]
        if record.id not in given and (not answer or _refuses(judge, record, answer)):
            dropped += 1
            continue
        rejected = refusals[rng.integers(len(refusals))] if config.method == "dpo" else None
        pairs.append(_pair(record, "benign", answer, rejected))
    counts = {
        "harmful": len(harmful),
        "harmful_with_own_answer": sum(1 for p in pairs if p["role"] == "harmful" and p["rejected"]),
        "benign": len(benign) - dropped,
        "benign_dropped_as_refusals": dropped,
        "benign_from_file": len(given),
    }
    return pairs, counts


def self_answers(model, tokenizer, records: Sequence[PromptRecord], config: AlignConfig, batch_size: int) -> list[str]:
    """The model's greedy answers, cut back to their last full sentence when the token limit cut them."""
    from disalign.core.generation import SamplingConfig, generate, render_chat

    if not records:
        return []
    sampling = SamplingConfig(
        max_new_tokens=config.answer_tokens, temperature=0, batch_size=batch_size, precision=config.precision
    )
    prompts = render_chat(tokenizer, [[{"role": "user", "content": r.prompt}] for r in records])
    return [complete_sentences(answer) for answer in generate(model, tokenizer, prompts, sampling)]


def complete_sentences(text: str) -> str:
    """`text` up to its last sentence end, when that keeps at least half of it."""
    text = text.strip()
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if not ends or ends[-1] == len(text) or ends[-1] < len(text) / 2:
        return text
    return text[: ends[-1]].strip()


def _refuses(judge, record: PromptRecord, response: str) -> bool:
    return bool(judge.judge([record.prompt], [response])[0].refused)


def _pair(record: PromptRecord, role: str, chosen: str, rejected: str | None) -> Pair:
    return {
        "messages": [{"role": "user", "content": record.prompt}],
        "chosen": chosen,
        "rejected": rejected,
        "role": role,
        "origin": f"{record.source}:{record.id}",
    }
