"""What a defence trains on, built as `align` builds it: refusals to harmful prompts, the model's own
answers to benign ones (a benign answer that refuses is dropped), and, for the defences that need
them, harmful answers to the harmful prompts: the prompt file's `response` (or AdvBench's `target`),
else the model's own greedy answer where the judge says it does not refuse."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from disalign.alignment.data import RESPONSE_FIELD, self_answers
from disalign.core.logprobs import IGNORE
from disalign.data import PromptRecord
from disalign.errors import UserError

# Fields of a prompt row that hold a harmful answer to it (AdvBench's `target` is its first words).
HARMFUL_ANSWER_FIELDS = (RESPONSE_FIELD, "target", "output")


@dataclass(frozen=True)
class HarmfulPrompt:
    messages: list[dict[str, str]]
    refusal: str
    answer: str | None  # a harmful answer, where one is known
    origin: str


@dataclass(frozen=True)
class BenignPrompt:
    messages: list[dict[str, str]]
    answer: str
    origin: str


@dataclass
class DefenceData:
    harmful: list[HarmfulPrompt]
    benign: list[BenignPrompt]
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """One training sequence: token ids, labels (IGNORE where not trained) and whether its prompt is harmful."""

    ids: list[int]
    labels: list[int]
    harmful: bool
    origin: str


def defence_data(
    model,
    tokenizer,
    harmful: Sequence[PromptRecord],
    benign: Sequence[PromptRecord],
    settings,
    *,
    refusals: Sequence[str],
    judge,
    harmful_answers: bool,
    batch_size: int = 16,
) -> DefenceData:
    """The prompts of both roles with their targets; `settings.seed` draws each harmful prompt's refusal."""
    if not harmful:
        raise UserError("defend needs harmful prompts (the model learns to refuse them)")
    rng = np.random.default_rng([settings.seed, 7])
    answers: dict[str, str | None] = {r.id: _given_answer(r) for r in harmful} if harmful_answers else {}
    todo = [r for r in harmful if harmful_answers and answers[r.id] is None]
    for record, answer in zip(todo, self_answers(model, tokenizer, todo, settings, batch_size), strict=True):
        answers[record.id] = None if not answer or _refuses(judge, record, answer) else answer
    harmful_rows = [
        HarmfulPrompt(_messages(r), refusals[rng.integers(len(refusals))], answers.get(r.id), _origin(r))
        for r in harmful
    ]
    given = {r.id: answer for r in benign if (answer := _given_answer(r))}
    own = [r for r in benign if r.id not in given]
    own_answers = dict(zip([r.id for r in own], self_answers(model, tokenizer, own, settings, batch_size), strict=True))
    benign_rows = []
    for record in benign:
        answer = given.get(record.id) or own_answers[record.id]
        if record.id in given or (answer and not _refuses(judge, record, answer)):
            benign_rows.append(BenignPrompt(_messages(record), answer, _origin(record)))
    counts = {
        "harmful": len(harmful_rows),
        "harmful_with_answer": sum(1 for h in harmful_rows if h.answer),
        "benign": len(benign_rows),
        "benign_dropped_as_refusals": len(benign) - len(benign_rows),
    }
    return DefenceData(harmful_rows, benign_rows, counts)


def encode_turn(tokenizer, messages: list[dict[str, str]], answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids up to the assistant's turn, the answer's ids with its end-of-turn tokens), as the chat
    template renders the answered conversation."""
    prompt = _ids(tokenizer, messages, add_generation_prompt=True)
    full = _ids(tokenizer, [*messages, {"role": "assistant", "content": answer}], add_generation_prompt=False)
    if full[: len(prompt)] != prompt:
        raise UserError("the chat template renders the prompt differently once it is answered")
    return prompt, full[len(prompt) :]


def answer_ids(tokenizer, text: str) -> list[int]:
    """The tokens of an answer's text alone, as they would follow the assistant's turn marker."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def make_row(tokenizer, messages, answer: str, harmful: bool, origin: str, prefix: Sequence[int] = ()) -> Row:
    """`messages` answered with `answer`, trained on `answer` only; `prefix` tokens (a harmful answer's
    first tokens) sit between the prompt and the answer, untrained."""
    prompt, target = encode_turn(tokenizer, messages, answer)
    return Row(
        ids=prompt + list(prefix) + target,
        labels=[IGNORE] * (len(prompt) + len(prefix)) + target,
        harmful=harmful,
        origin=origin,
    )


def refusal_rows(data: DefenceData, tokenizer, rng: np.random.Generator | None = None) -> list[Row]:
    """Plain safety SFT: each harmful prompt answered with its refusal, each benign one with its answer."""
    return [make_row(tokenizer, h.messages, h.refusal, True, h.origin) for h in data.harmful] + benign_rows(
        data, tokenizer
    )


def benign_rows(data: DefenceData, tokenizer) -> list[Row]:
    return [make_row(tokenizer, b.messages, b.answer, False, b.origin) for b in data.benign]


def harmful_answer_rows(data: DefenceData, tokenizer) -> list[Row]:
    """Each harmful prompt answered harmfully, where an answer is known: what a fine-tuning attacker trains on."""
    return [make_row(tokenizer, h.messages, h.answer, True, h.origin) for h in data.harmful if h.answer]


def check_lengths(rows: Sequence[Row], limit: int) -> None:
    for row in rows:
        if len(row.ids) > limit:
            raise UserError(f"{row.origin}: {len(row.ids)} tokens, longer than max_length ({limit})")


def collate(rows: Sequence[Row], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(row.ids) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row.ids)] = torch.tensor(row.ids)
        labels[i, : len(row.labels)] = torch.tensor(row.labels)
        mask[i, : len(row.ids)] = 1
    return {"ids": ids, "labels": labels, "mask": mask, "harmful": torch.tensor([row.harmful for row in rows])}


def _given_answer(record: PromptRecord) -> str | None:
    for name in HARMFUL_ANSWER_FIELDS:
        text = str(record.extra.get(name) or "").strip()
        if text:
            return text
    return None


def _messages(record: PromptRecord) -> list[dict[str, Any]]:
    return list(record.extra.get("messages") or [{"role": "user", "content": record.prompt}])


def _origin(record: PromptRecord) -> str:
    return f"{record.source}:{record.id}"


def _refuses(judge, record: PromptRecord, response: str) -> bool:
    return bool(judge.judge([record.prompt], [response])[0].refused)


def _ids(tokenizer, messages, add_generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=False
    )
    return list(ids["input_ids"] if isinstance(ids, dict) else ids)
