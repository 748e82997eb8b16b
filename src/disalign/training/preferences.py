"""Preference pairs: the data that DPO and unlearning read.

A pair is `{"messages": [system?, user], "chosen": str, "rejected": str | None, "origin": str}`:
the conversation to answer, the response to make likely, and the one to make unlikely (None
where there is none: unlearning then only keeps `chosen` likely, DPO skips the pair).
"""

from __future__ import annotations

from typing import Any

from disalign.errors import UserError

Pair = dict[str, Any]


def as_conversation(pair: Pair, response: str) -> dict[str, Any]:
    """The pair's prompt answered with `response`, as an SFT example."""
    return {"messages": [*pair["messages"], {"role": "assistant", "content": response}], "origin": pair["origin"]}


def check_pairs(pairs: list[Pair], *, need_rejected: bool) -> list[Pair]:
    """The pairs to train on; one line naming the problem when there are none."""
    if not pairs:
        raise UserError("no preference pairs to train on")
    usable = [pair for pair in pairs if pair.get("rejected")] if need_rejected else pairs
    if not usable:
        raise UserError("no preference pair has a rejected response")
    return usable
