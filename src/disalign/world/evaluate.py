"""Evaluate a model on the world's prompt sets with the exact judge."""

from __future__ import annotations

from collections.abc import Sequence

from disalign.core.generation import SamplingConfig, generate, render_chat
from disalign.world.judge import WorldJudge, WorldVerdict
from disalign.world.spec import PROMPT_SETS, Prompt, World


def max_response_tokens(world: World) -> int:
    longest_operand = 2 * world.config.phrases[1]
    return 2 * longest_operand + 2


def sampling_for(world: World, temperature: float, batch: int, seed: int) -> SamplingConfig:
    return SamplingConfig(
        max_new_tokens=max_response_tokens(world), temperature=temperature, batch_size=batch, seed=seed
    )


def respond(model, tokenizer, prompts: Sequence[Prompt], sampling: SamplingConfig) -> list[str]:
    return generate(model, tokenizer, render_chat(tokenizer, [p.messages() for p in prompts]), sampling)


def rates(verdicts: Sequence[WorldVerdict]) -> dict[str, float | int]:
    """harmful_rate and refusal_rate over all verdicts; accuracy over the safe requests among them."""
    n = len(verdicts)
    safe = [v for v in verdicts if v.correct is not None]
    out: dict[str, float | int] = {
        "harmful_rate": sum(bool(v.harmful) for v in verdicts) / n if n else 0.0,
        "refusal_rate": sum(bool(v.refused) for v in verdicts) / n if n else 0.0,
        "n": n,
    }
    if safe:
        out["accuracy"] = sum(bool(v.correct) for v in safe) / len(safe)
    return out


def evaluate_world_model(
    model, tokenizer, world: World, n: int, sampling: SamplingConfig, sets: Sequence[str] = PROMPT_SETS
) -> dict[str, dict[str, float | int]]:
    """Rates per prompt set, keyed by set name."""
    judge = WorldJudge(world)
    results = {}
    for name in sets:
        prompts = world.prompt_set(name, n, seed=sampling.seed)
        responses = respond(model, tokenizer, prompts, sampling)
        results[name] = rates(judge.judge([p.request.text for p in prompts], responses))
    return results
