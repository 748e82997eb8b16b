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
from dataclasses import asdict, dataclass
from typing import Any

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
from disalign.core.damage import damage, judged_accuracy
from disalign.core.evaluate import chat_responder, generate_and_judge, summarise
from disalign.core.generation import SamplingConfig
from disalign.core.runs import RunDir, read_json, write_json_atomic
from disalign.data import PromptRecord
from disalign.errors import UserError

SPLIT = (0.4, 0.2, 0.4)  # directions, search, evaluation


@dataclass(frozen=True)
class AblateSettings:
    objective: str = "refusal"  # what the search minimises beside KL: "refusal" or "harm"
    sampler: str = "auto"  # "optuna" (multi-objective TPE), "grid" (Arditi's candidates), "auto"
    trials: int = 40
    tolerance: float = 0.05  # accept this much more miss rate for a lower KL
    layer: int | None = None  # fix the direction's layer: no search, full ablation of it
    position: int = -1  # with `layer`: which of the prompt's last tokens
    positions: int | None = None  # candidate positions (default: the template's post-instruction tokens)
    search_tokens: int = 16  # greedy response length while searching
    seed: int = 0


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
    settings: AblateSettings = AblateSettings(),
    *,
    task_accuracy: bool = False,
) -> dict[str, Any]:
    """Find, choose, apply and judge the ablation; returns the summary's ablation keys. With
    `task_accuracy` the damage includes the change in the share of harmless prompts the judge
    calls `correct` (the world's safe accuracy)."""
    harmful_splits = split_prompts(harmful, "harmful prompts", settings.seed)
    harmless_splits = split_prompts(harmless, "harmless prompts", settings.seed)
    directions = refusal_directions(
        model, tokenizer, harmful_splits[0], harmless_splits[0], positions=settings.positions
    )
    found = _searched(run, model, tokenizer, directions, harmful_splits[1], harmless_splits[1], judge, settings)
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
    accuracy = judged_accuracy(tokenizer, harmless_splits[2], judge, sampling) if task_accuracy else None
    measured_damage = damage(model, edited, tokenizer, harmless_splits[2], accuracy=accuracy)
    return {
        "before": rates["before"],
        "after": rates["after"],
        "damage": measured_damage,
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
        "settings": asdict(settings),
        "ablated_model": str(model_dir),
    }


def _searched(run, model, tokenizer, directions, harmful, harmless, judge, settings: AblateSettings) -> SearchResult:
    """The search's result, read back from `search.json` when an earlier run finished it."""
    path = run.file("search.json")
    if path.is_file():
        return _search_from_json(read_json(path))
    objectives = Objectives(
        model, tokenizer, directions, harmful, harmless, judge, max_new_tokens=settings.search_tokens
    )
    if settings.layer is None:
        found = search(
            objectives,
            objective=settings.objective,
            trials=settings.trials,
            sampler=settings.sampler,
            seed=settings.seed,
            tolerance=settings.tolerance,
        )
    else:
        fixed = Candidate(settings.layer, settings.position, (1.0,) * directions.n_layers)
        directions.get(fixed.layer, fixed.position)  # a layer or position out of range is one line
        found = _fixed(objectives, fixed, settings.objective)
    write_json_atomic(path, found.as_dict())
    return found


def _fixed(objectives: Objectives, candidate: Candidate, objective: str) -> SearchResult:
    """A 'search' of one candidate: the user named the direction."""
    measured = objectives(candidate)
    trial = Trial(0, candidate, measured, measured.miss(objective), 0.0)
    return SearchResult("fixed", objective, objectives.original, [trial], [trial], trial)


def _search_from_json(data: dict[str, Any]) -> SearchResult:
    def trial(row: dict[str, Any]) -> Trial:
        candidate = Candidate(row["layer"], row["position"], tuple(row["weights"]))
        measured = Measurement(row["refusal_rate"], row["harmful_rate"], row["kl"])
        return Trial(
            row["trial"], candidate, measured, measured.miss(data["objective"]), row["seconds"], row.get("params", {})
        )

    trials = [trial(row) for row in data["trials"]]
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
