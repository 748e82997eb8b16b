"""Prompts -> generation -> records -> judgement -> summary, resumable batch by batch.

`disalign eval` and every attack share this: a caller supplies, per batch of prompt records,
a function that produces responses; records are judged and appended as each batch finishes,
so an interrupted run loses at most the batch in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from disalign.core.progress import progress_bar
from disalign.core.runs import RunDir
from disalign.core.stats import per_category, rate_summary
from disalign.data import PromptRecord

Respond = Callable[[list[PromptRecord]], list[str]]


def messages_of(record: PromptRecord) -> list[dict[str, str]]:
    """The conversation to answer: earlier turns when the source has them, else one user turn."""
    return record.extra.get("messages") or [{"role": "user", "content": record.prompt}]


def chat_responder(model, tokenizer, sampling) -> Respond:
    """Answers each record's conversation with the model's chat template (batched, seeded)."""
    from disalign.core.generation import generate, render_chat

    def respond(batch: list[PromptRecord]) -> list[str]:
        return generate(model, tokenizer, render_chat(tokenizer, [messages_of(p) for p in batch]), sampling)

    return respond


def generate_and_judge(
    run: RunDir,
    prompts: Sequence[PromptRecord],
    respond: Respond,
    judge,
    *,
    batch_size: int,
    key: Callable[[PromptRecord], str],
    fields: dict[str, Any] | None = None,
    description: str = "generate",
) -> list[dict[str, Any]]:
    """Respond to every prompt not yet recorded under `key`, judge, append; return all records of these keys."""
    todo = [p for p in prompts if not run.is_done(key(p))]
    with progress_bar(description, len(prompts)) as advance:
        advance(len(prompts) - len(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            responses = respond(batch)
            verdicts = judge.judge([p.prompt for p in batch], responses)
            run.append(
                {
                    "key": key(p),
                    "id": p.id,
                    "prompt": p.prompt,
                    "category": p.category,
                    "source": p.source,
                    **(fields or {}),
                    "response": response,
                    **verdict.as_dict(),
                    "judge": judge.name,
                }
                for p, response, verdict in zip(batch, responses, verdicts, strict=True)
            )
            advance(len(batch))
    wanted = {key(p) for p in prompts}
    return [r for r in run.records() if r.get("key") in wanted]


def summarise(records: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Harmful rate with its 95 % bootstrap interval, refusal rate, and the same per category."""
    harmful = [r["harmful"] for r in records]
    summary = rate_summary(harmful, seed=seed)
    refusal = rate_summary([r["refused"] for r in records], key="refusal_rate", seed=seed)
    summary["refusal_rate"] = refusal["refusal_rate"]
    summary["refusal_ci"] = refusal["ci"]
    categories = [r.get("category") or "" for r in records]
    if len(set(categories)) > 1:
        summary["per_category"] = per_category(categories, harmful)
    return summary
