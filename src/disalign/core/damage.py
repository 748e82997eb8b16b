"""The damage an attack does beside the harm it unlocks, reported by every attack.

    kl_first_token       KL(original ‖ attacked) of the first response token on harmless prompts
    kl_mean_32           the same, averaged over the first 32 tokens of the original's own greedy
                         responses (each prompt weighs the same)
    safe_accuracy_delta  accuracy(attacked) − accuracy(original) on a task a judge scores (the
                         world's safe accuracy); None where no task exists
    capability_accuracy  the attacked model's accuracy on the capability quick set
                         (data/capability/, scored by log-likelihood); in the world its safe accuracy
    capability_drop      the original's capability accuracy minus the attacked model's (in the world
                         −safe_accuracy_delta); positive when the attack cost capability
    degenerate_rate      share of the attacked model's greedy answers to the harmless prompts that
                         core/degeneration.py calls degenerate (loops, word salad)
    system_prompt_refusal_retention
                         of the benign requests that the original refuses because a system prompt
                         forbids their topic, the share the attacked model still refuses; None
                         where the chat template has no system role or the original refuses none
    system_prompt_refusal_rate
                         the attacked model's refusal rate on those requests under that system prompt

Both models are anything with a causal-LM forward over the same vocabulary: full models and
PEFT-wrapped adapters alike. An edit that removes refusals by wrecking the model shows here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from disalign.core.activations import right_padded
from disalign.core.evaluate import rendered_prompts
from disalign.core.generation import SamplingConfig, check_context, generate
from disalign.core.logprobs import kl_per_position
from disalign.core.progress import progress_bar
from disalign.data import PromptRecord
from disalign.errors import UserError

KL_TOKENS = 32

Respond = Callable[[Any, Sequence[PromptRecord]], list[str]]  # (model, prompts) -> responses


class DamageMeter:
    """The damage of attacked models against their original (heretic's Evaluator): the original's
    greedy responses and task accuracy are computed once, on first use, and every call after that
    returns `{"kl_first_token", "kl_mean_32", "safe_accuracy_delta"}` of one attacked model.

    `task_judge` (the world's) turns the damage's harmless prompts into a task whose accuracy is
    compared (its `correct` verdicts); without one `safe_accuracy_delta` is None."""

    def __init__(
        self,
        tokenizer,
        harmless: Sequence[PromptRecord],
        *,
        task_judge=None,
        sampling: SamplingConfig | None = None,
        batch_size: int = 16,
    ):
        if not harmless:
            raise UserError("damage: no harmless prompts")
        if task_judge is not None and sampling is None:
            raise ValueError("a task judge needs the sampling that answers its prompts")
        self.tokenizer, self.harmless, self.batch_size = tokenizer, list(harmless), batch_size
        self.rendered = rendered_prompts(tokenizer, self.harmless)
        self.task_judge, self.sampling = task_judge, sampling
        self._baseline_of: tuple[Any, list[list[tuple[list[int], list[int]]]], float | None] | None = None

    def on(self, harmless: Sequence[PromptRecord]) -> DamageMeter:
        """The same measure on other harmless prompts (an ablation keeps its own held-out split)."""
        return DamageMeter(
            self.tokenizer, harmless, task_judge=self.task_judge, sampling=self.sampling, batch_size=self.batch_size
        )

    def __call__(self, original, attacked, respond: Respond | None = None) -> dict[str, float | None]:
        """The damage of `attacked` against `original`; `respond(model, prompts)` answers the task's
        prompts for an attacked model that `generate` cannot run (an emulated one)."""
        batches, accuracy_before = self._baseline(original)
        per_prompt_first: list[float] = []
        per_prompt_mean: list[float] = []
        device = _device(original)
        with progress_bar("damage: KL from the original", len(self.harmless)) as advance:
            for rows in batches:
                ids, mask = right_padded([prompt + response for prompt, response in rows], self.tokenizer.pad_token_id)
                with torch.no_grad():
                    try:
                        kl = kl_per_position(original, attacked, ids.to(device), mask.to(device)).cpu()
                    except ValueError as err:  # different vocabularies
                        raise UserError(f"damage: the attacked model does not match the original ({err})") from None
                for row, (prompt, response) in enumerate(rows):
                    # kl[:, t] is the KL of the prediction after ids[:t + 1]: the first response token sits at
                    # len(prompt) - 1.
                    scored = kl[row, len(prompt) - 1 : len(prompt) - 1 + len(response)]
                    per_prompt_first.append(float(scored[0]))
                    per_prompt_mean.append(float(scored.mean()))
                advance(len(rows))
        delta = None
        if self.task_judge is not None:
            after = self._accuracy(attacked, respond)
            delta = None if accuracy_before is None or after is None else after - accuracy_before
        return {
            "kl_first_token": sum(per_prompt_first) / len(per_prompt_first),
            "kl_mean_32": sum(per_prompt_mean) / len(per_prompt_mean),
            "safe_accuracy_delta": delta,
            "capability_accuracy": None,
            "capability_drop": None,
            "degenerate_rate": None,
            "system_prompt_refusal_retention": None,
            "system_prompt_refusal_rate": None,
        }

    def _baseline(self, original):
        """The original's greedy responses (at most 32 new tokens, up to and including its end-of-turn
        token), along which both models are scored, and its task accuracy."""
        if self._baseline_of is None or self._baseline_of[0] is not original:
            batches = []
            with progress_bar("damage: the original's responses", len(self.rendered)) as advance:
                for start in range(0, len(self.rendered), self.batch_size):
                    prompts = self.rendered[start : start + self.batch_size]
                    batches.append(_greedy_continuations(original, self.tokenizer, prompts, KL_TOKENS))
                    advance(len(prompts))
            accuracy = self._accuracy(original, None) if self.task_judge is not None else None
            self._baseline_of = (original, batches, accuracy)
        return self._baseline_of[1:]

    def _accuracy(self, model, respond: Respond | None) -> float | None:
        """The share of the harmless prompts whose responses the task judge calls `correct`."""
        if respond is None:
            responses = generate(model, self.tokenizer, self.rendered, self.sampling)
        else:
            responses = respond(model, self.harmless)
        verdicts = self.task_judge.judge([p.prompt for p in self.harmless], responses)
        decided = [v.correct for v in verdicts if v.correct is not None]
        return sum(decided) / len(decided) if decided else None


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
