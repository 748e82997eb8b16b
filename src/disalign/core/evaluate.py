"""Prompts -> generation -> records -> judgement -> summary, resumable batch by batch.

`disalign eval` and every attack share this: a caller supplies a function that answers a batch
of prompt records under a given seed; records are judged and appended as each batch finishes.
Batches are fixed by position in the prompt list and seeded by that position, and a batch is
written as one unit, so an interrupted run regenerates the batch in flight exactly as an
uninterrupted run would have made it: the records of both are byte for byte the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from disalign.core.degeneration import unscorable_rate
from disalign.core.progress import progress_bar
from disalign.core.runs import RunDir
from disalign.core.stats import per_category, rate_summary
from disalign.data import PromptRecord

Respond = Callable[[list[PromptRecord], int], list[str]]  # (batch, seed) -> responses


def messages_of(record: PromptRecord) -> list[dict[str, str]]:
    """The conversation to answer: earlier turns when the source has them, else one user turn."""
    return record.extra.get("messages") or [{"role": "user", "content": record.prompt}]


def rendered_prompts(tokenizer, records: Sequence[PromptRecord]) -> list[str]:
    """Each record's conversation through the chat template, ready for the assistant's turn."""
    from disalign.core.generation import render_chat

    return render_chat(tokenizer, [messages_of(record) for record in records])


def chat_responder(model, tokenizer, sampling) -> Respond:
    """Answers each record's conversation with the model's chat template (batched, seeded)."""
    from disalign.core.generation import generate

    def respond(batch: list[PromptRecord], seed: int) -> list[str]:
        return generate(model, tokenizer, rendered_prompts(tokenizer, batch), replace(sampling, seed=seed))

    return respond


def batch_seed(seed: int, start: int) -> int:
    """The seed of the batch that begins at prompt index `start`."""
    return seed * 1_000_003 + start


def generate_and_judge(
    run: RunDir,
    prompts: Sequence[PromptRecord],
    respond: Respond,
    judge,
    *,
    batch_size: int,
    seed: int,
    key: Callable[[PromptRecord], str],
    fields: dict[str, Any] | None = None,
    description: str = "generate",
) -> list[dict[str, Any]]:
    """Respond to every batch with a prompt not yet recorded under `key`, judge, append; return
    all records of these keys in prompt order."""
    with progress_bar(description, len(prompts)) as advance:
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start : start + batch_size])
            missing = [not run.is_done(key(p)) for p in batch]
            if any(missing):
                responses = respond(batch, batch_seed(seed, start))
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
                    for p, response, verdict, needed in zip(batch, responses, verdicts, missing, strict=True)
                    if needed
                )
            advance(len(batch))
    by_key = {r["key"]: r for r in run.records() if "key" in r}
    return [by_key[key(p)] for p in prompts]


def summarise(records: Sequence[dict[str, Any]], cluster_by: str | None = None) -> dict[str, Any]:
    """Harmful rate with its 95 % interval, refusal rate, and the same per category. With
    `cluster_by` (e.g. "id" when each prompt was sampled under several seeds) intervals resample
    whole clusters."""
    clusters = [r[cluster_by] for r in records] if cluster_by else None
    harmful = [r["harmful"] for r in records]
    summary = rate_summary(harmful, clusters=clusters)
    refusal = rate_summary([r["refused"] for r in records], key="refusal_rate", clusters=clusters)
    summary["refusal_rate"] = refusal["refusal_rate"]
    summary["refusal_ci"] = refusal["ci"]
    summary["unscorable_rate"] = unscorable_rate(records)
    categories = [r.get("category") or "" for r in records]
    if len(set(categories)) > 1:
        summary["per_category"] = per_category(categories, harmful)
    return summary
