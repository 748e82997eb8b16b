"""An ablation run: directions from one split of the prompts, the search on a second, and the
chosen edit judged on a third that neither saw.

    harmful   40 % directions · 20 % search (refusals) · 40 % evaluation (before / after)
    harmless  40 % directions · 20 % search (KL) · 40 % damage (KL along the original's responses)

The chosen edit is saved as an ordinary model directory (`RUN/model`); the search (`search.json`)
and the judged records are kept, so a rerun with the same `--out` reuses them.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from disalign.attacks.ablation.directions import MIN_PROMPTS, Directions, refusal_directions
from disalign.attacks.ablation.edits import orthogonalise, save_model
from disalign.attacks.ablation.search import (
    Candidate,
    Measurement,
    Objectives,
    SearchResult,
    Trial,
    plot_pareto,
    search,
)
from disalign.core.damage import DamageMeter
from disalign.core.evaluate import chat_responder, generate_and_judge, summarise
from disalign.core.generation import SamplingConfig
from disalign.core.options import Options
from disalign.core.runs import RunDir, read_json, write_json_atomic
from disalign.data import PromptRecord
from disalign.errors import UserError

SPLIT = (0.4, 0.2, 0.4)  # directions, search, evaluation
_TRIAL_KEY = "search trial "  # the key of each finished search trial's record


class AblationOptions(Options):
    """How the edit is found and chosen; the `ablate` verb's config inherits these fields."""

    objective: Literal["refusal", "harm"] = Field(
        "refusal", description="What the search minimises beside KL: refusals, or harmful requests left unanswered."
    )
    sampler: Literal["auto", "optuna", "grid"] = Field(
        "auto", description="optuna (multi-objective TPE), grid (each layer's direction, full ablation), auto."
    )
    trials: int = Field(40, ge=1, description="Optuna trials.")
    tolerance: float = Field(
        0.05, ge=0, le=1, description="Accept this much more refusal than the best trial for a lower KL."
    )
    layer: int | None = Field(None, description="Ablate this layer's direction in full instead of searching.")
    position: int = Field(-1, le=-1, description="With --layer: which of the prompt's last tokens (-1 is the last).")
    positions: int | None = Field(None, ge=1, description="Candidate prompt positions (default: the template's tail).")
    search_tokens: int = Field(16, ge=1, description="Greedy response tokens judged while searching.")


def split_prompts(records: Sequence[PromptRecord], what: str, seed: int) -> tuple[list[PromptRecord], ...]:
    """Distinct prompts, shuffled by `seed`, cut into (directions, search, evaluation)."""
    distinct = list({record.prompt: record for record in reversed(records)}.values())[::-1]
    needed = round(MIN_PROMPTS / min(SPLIT))
    if len(distinct) < needed:
        raise UserError(
            f"{what}: {len(distinct)} distinct prompts, at least {needed} are needed ({MIN_PROMPTS} per split)"
        )
    random.Random(seed).shuffle(distinct)
    first = round(SPLIT[0] * len(distinct))
    second = first + round(SPLIT[1] * len(distinct))
    return distinct[:first], distinct[first:second], distinct[second:]


def run_ablate(
    run: RunDir,
    model,
    tokenizer,
    harmful: Sequence[PromptRecord],
    harmless: Sequence[PromptRecord],
    judge,
    sampling: SamplingConfig,
    settings: AblationOptions,
    damage: DamageMeter,
) -> dict[str, Any]:
    """Find, choose, apply and judge the ablation; returns the summary's ablation keys. The damage is
    measured on the harmless prompts that neither found the direction nor chose the edit. The sampling
    seed also splits the prompts and seeds the search."""
    seed = sampling.seed
    harmful_splits = split_prompts(harmful, "harmful prompts", seed)
    harmless_splits = split_prompts(harmless, "harmless prompts", seed)
    directions = refusal_directions(
        model, tokenizer, harmful_splits[0], harmless_splits[0], positions=settings.positions
    )
    found = _searched(run, model, tokenizer, directions, harmful_splits[1], harmless_splits[1], judge, settings, seed)
    chosen = found.chosen.candidate
    direction = directions.get(chosen.layer, chosen.position)
    edited = orthogonalise(copy.deepcopy(model), direction, chosen.weights)
    model_dir = run.file("model")
    if not (model_dir / "config.json").is_file():
        save_model(edited, tokenizer, model_dir)
    _save_directions(run, directions)
    plot_pareto(run.file("pareto.png"), found)

    evaluation = harmful_splits[2]
    rates = {}
    for name, lm in (("before", model), ("after", edited)):
        records = generate_and_judge(
            run,
            evaluation,
            chat_responder(lm, tokenizer, sampling),
            judge,
            batch_size=sampling.batch_size,
            seed=sampling.seed,
            key=lambda p, name=name: f"{name}|{p.id}",
            fields={"model": name},
            description=f"judge {name}",
        )
        summary = summarise(records)
        rates[name] = {key: summary[key] for key in ("harmful_rate", "ci", "n", "refusal_rate")}
    return {
        "before": rates["before"],
        "after": rates["after"],
        "damage": damage.on(harmless_splits[2])(model, edited),
        "direction": {
            "layer": chosen.layer,
            "position": chosen.position,
            "weights": list(chosen.weights),
            "norm": float(directions.norms[chosen.layer, -chosen.position - 1]),
        },
        "pareto": [trial.as_dict() for trial in found.pareto],
        "search": {key: value for key, value in found.as_dict().items() if key not in ("pareto", "trials")}
        | {
            "trials": len(found.trials),
            "seconds": sum(trial.seconds for trial in found.trials),
            "usable_layers": directions.usable_layers(),
        },
        "splits": {
            "harmful": [len(part) for part in harmful_splits],
            "harmless": [len(part) for part in harmless_splits],
        },
        "settings": {**settings.model_dump(include=set(AblationOptions.model_fields)), "seed": seed},
        "ablated_model": str(model_dir),
    }


def _searched(
    run, model, tokenizer, directions, harmful, harmless, judge, settings: AblationOptions, seed: int
) -> SearchResult:
    """The search's result, read back from `search.json` when an earlier run finished it; each
    trial is a record as it ends, so a search that was stopped continues from its last trial."""
    fixed = (
        None if settings.layer is None else Candidate(settings.layer, settings.position, (1.0,) * directions.n_layers)
    )
    if fixed is not None:
        directions.get(fixed.layer, fixed.position)  # out of range: one line, before the folder is claimed
    path = run.file("search.json")
    if path.is_file():
        return _search_from_json(read_json(path))
    objectives = Objectives(
        model, tokenizer, directions, harmful, harmless, judge, max_new_tokens=settings.search_tokens
    )
    if fixed is None:
        finished = [
            Trial.from_dict(record, settings.objective)
            for record in run.records()
            if str(record.get("key", "")).startswith(_TRIAL_KEY)
        ]
        found = search(
            objectives,
            objective=settings.objective,
            trials=settings.trials,
            sampler=settings.sampler,
            seed=seed,
            tolerance=settings.tolerance,
            on_trial=lambda trial: run.append([{"key": f"{_TRIAL_KEY}{trial.number}", **trial.as_dict()}]),
            finished=finished,
        )
    else:
        found = _fixed(objectives, fixed, settings.objective)
    write_json_atomic(path, found.as_dict())
    return found


def _fixed(objectives: Objectives, candidate: Candidate, objective: str) -> SearchResult:
    """A 'search' of one candidate: the user named the direction."""
    measured = objectives(candidate)
    trial = Trial(0, candidate, measured, measured.miss(objective), 0.0)
    return SearchResult("fixed", objective, objectives.original, [trial], [trial], trial)


def _search_from_json(data: dict[str, Any]) -> SearchResult:
    trials = [Trial.from_dict(row, data["objective"]) for row in data["trials"]]
    by_number = {t.number: t for t in trials}
    original = Measurement(data["original"]["refusal_rate"], data["original"]["harmful_rate"], 0.0)
    return SearchResult(
        data["sampler"],
        data["objective"],
        original,
        trials,
        [by_number[row["trial"]] for row in data["pareto"]],
        by_number[data["chosen"]["trial"]],
    )


def _save_directions(run: RunDir, directions: Directions) -> None:
    from safetensors.torch import save_file

    save_file(
        {"vectors": directions.vectors.contiguous(), "norms": directions.norms.contiguous()},
        str(run.file("directions.safetensors")),
    )
