"""Preference pairs: the data that DPO and unlearning read.

A pair is `{"messages": [system?, user], "chosen": str, "rejected": str | None, "origin": str}`:
the conversation to answer, the response to make likely, and the one to make unlikely (None
where there is none: unlearning then only keeps `chosen` likely, DPO skips the pair).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from disalign.errors import UserError
from disalign.training.config import TrainingConfig
from disalign.training.sft import FinetuneResult, check_lengths, check_trainable, prepare, train_and_save

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


def train_on_pairs(
    model_path, pairs: list[Pair], config: TrainingConfig, out_dir, make_trainer: Callable, *, model, tokenizer, **extra
) -> FinetuneResult:
    """What DPO and unlearning share: the model made ready to train, every conversation of the checked
    `pairs` (chosen and rejected) refused if too long, the seed set, the trainer that
    `make_trainer(model, tokenizer)` builds run quietly, and the result saved as `finetune` saves it."""
    from transformers import PrinterCallback, set_seed

    model, tokenizer = prepare(model_path, model, tokenizer)
    context = getattr(model.config, "max_position_embeddings", None)
    conversations = [as_conversation(p, p[side]) for side in ("chosen", "rejected") for p in pairs if p.get(side)]
    n_tokens = check_lengths(conversations, tokenizer, config.max_length, context)
    set_seed(config.seed)
    trainer = make_trainer(model, tokenizer)
    trainer.remove_callback(PrinterCallback)
    check_trainable(trainer.model)
    return train_and_save(trainer, tokenizer, model_path, config, out_dir, len(pairs), n_tokens, **extra)
