"""An ablation run: directions from one split of the prompts, the search on a second, and the
chosen edit judged on a third that neither saw.

    harmful   40 % directions · 20 % search (refusals) · 40 % evaluation (before / after)
    harmless  40 % directions · 20 % search (KL) · 40 % damage (KL along the original's responses)

The chosen edit is saved as an ordinary model directory (`RUN/model`); the search (`search.json`)
and the judged records are kept, so a rerun with the same `--out` reuses them. When no edit within
the damage budget lowers refusals, nothing is saved or judged after: `outcome` says so, and
`after`, `damage`, `direction` and `ablated_model` are null beside the Pareto front.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from disalign.attacks.ablation.directions import MIN_PROMPTS, Directions, refusal_directions
from disalign.attacks.ablation.edits import orthogonalise, residual_writers, save_model, untie_output_embeddings
from disalign.attacks.ablation.search import (
    Budget,
    Candidate,
    Measurement,
    Objectives,
    SearchPlan,
    SearchResult,
    Trial,
    choose,
    pareto_front,
    plot_pareto,
    search,
)
from disalign.core.audit import edit_audit, module_type
from disalign.core.damage import DamageMeter
from disalign.core.degeneration import degenerate_rate, mark_records
from disalign.core.evaluate import chat_responder, generate_and_judge, summarise
from disalign.core.generation import SamplingConfig
from disalign.core.options import Options
from disalign.core.progress import console
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
    kl_budget: float = Field(
        0.5, ge=0, allow_inf_nan=False, description="Choose only edits whose first-token KL is at most this."
    )
    degenerate_margin: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Most extra share of degenerate search answers (over the original's) a chosen edit may have.",
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
    *,
    degeneration: bool = True,
) -> dict[str, Any]:
    """Find, choose, apply and judge the ablation; returns the summary's ablation keys. The damage is
    measured on the harmless prompts that neither found the direction nor chose the edit. The sampling
    seed also splits the prompts and seeds the search. With `degeneration` (text, not the world's
    language) every judged response is scored by `core.degeneration`, and a degenerate one counts as
    neither harmful nor a refusal."""
    seed = sampling.seed
    harmful_splits = split_prompts(harmful, "harmful prompts", seed)
    harmless_splits = split_prompts(harmless, "harmless prompts", seed)
    directions = refusal_directions(
        model, tokenizer, harmful_splits[0], harmless_splits[0], positions=settings.positions
    )
    found = _searched(
        run, model, tokenizer, directions, harmful_splits[1], harmless_splits[1], judge, settings, seed, degeneration
    )
    _save_directions(run, directions)
    plot_pareto(run.file("pareto.png"), found)
    console.print(f"ablation: {found.outcome}")

    evaluation = harmful_splits[2]
    models = {"before": model}
    chosen = found.chosen
    edit: dict[str, Any] = {"direction": None, "damage": None, "ablated_model": None, "edit_audit": None}
    if chosen is not None:
        candidate = chosen.candidate
        edited = orthogonalise(
            copy.deepcopy(model), directions.get(candidate.layer, candidate.position), candidate.weights
        )
        model_dir = run.file("model")
        if not (model_dir / "config.json").is_file():
            save_model(edited, tokenizer, model_dir)
        models["after"] = edited
        edit = {
            "direction": {
                "layer": candidate.layer,
                "position": candidate.position,
                "weights": list(candidate.weights),
                "norm": float(directions.norms[candidate.layer, -candidate.position - 1]),
            },
            "damage": damage.on(harmless_splits[2])(model, edited),
            "ablated_model": str(model_dir),
            "edit_audit": _audit(model, edited),
        }
    rates: dict[str, Any] = {"before": None, "after": None}
    for name, lm in models.items():
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
        if degeneration:  # model-free scores: under an original that refuses, compliance is surprising by design
            records = mark_records(records)
        summary = summarise(records)
        rates[name] = {key: summary[key] for key in ("harmful_rate", "ci", "n", "refusal_rate")}
        rates[name]["degenerate_rate"] = degenerate_rate(records) if degeneration else None
    return {
        "before": rates["before"],
        "after": rates["after"],
        "outcome": found.outcome,
        "edit_found": chosen is not None,
        **edit,
        "pareto": [trial.as_dict() for trial in found.pareto],
        "search": {key: value for key, value in found.as_dict().items() if key not in ("pareto", "trials")}
        | {
            "trials": len(found.trials),
            "seconds": sum(trial.seconds for trial in found.trials),
            "usable_layers": directions.usable_layers(),
            "positions": directions.n_positions,
            "tried": _tried(found),
        },
        "splits": {
            "harmful": [len(part) for part in harmful_splits],
            "harmless": [len(part) for part in harmless_splits],
        },
        "settings": {**settings.model_dump(include=set(AblationOptions.model_fields)), "seed": seed},
    }


def _tried(found: SearchResult) -> dict[str, Any]:
    """What the search's trials covered: the layers and positions whose directions were removed,
    and the range of per-layer weights."""
    candidates = [trial.candidate for trial in found.trials]
    weights = [weight for candidate in candidates for weight in candidate.weights]
    return {
        "direction_layers": sorted({c.layer for c in candidates}),
        "positions": sorted({c.position for c in candidates}, reverse=True),
        "weight_range": [min(weights), max(weights)],
        "full_ablations": sum(all(w == 1.0 for w in c.weights) for c in candidates),
    }


def _audit(original, edited) -> dict[str, Any]:
    """Which weights the edit changed and by how much; its targets are the modules that write to the
    residual stream (a layer whose kernel weight is 0 is left untouched on purpose). An original
    whose unembedding is its input embedding is compared untied, as the edit left it."""
    names = {id(module): name for name, module in original.named_modules()}
    targets = sorted({module_type(f"{names[id(writer.module)]}.weight") for writer in residual_writers(original)})
    reference = original
    if original.get_output_embeddings() is not None and (
        original.get_output_embeddings().weight is original.get_input_embeddings().weight
    ):
        reference = copy.deepcopy(original)
        untie_output_embeddings(reference)
    return edit_audit(reference, edited, targets)


def _searched(
    run, model, tokenizer, directions, harmful, harmless, judge, settings: AblationOptions, seed: int, degeneration
) -> SearchResult:
    """The search's result, read back from `search.json` when an earlier run finished it (its choice
    made again under these settings); each trial is a record as it ends, so a search that was
    stopped continues from its last trial."""
    fixed = (
        None if settings.layer is None else Candidate(settings.layer, settings.position, (1.0,) * directions.n_layers)
    )
    if fixed is not None:
        directions.get(fixed.layer, fixed.position)  # out of range: one line, before the folder is claimed
    budget = Budget(settings.kl_budget, settings.degenerate_margin)
    path = run.file("search.json")
    if path.is_file():
        return _search_from_json(read_json(path), budget, settings.tolerance)
    objectives = Objectives(
        model,
        tokenizer,
        directions,
        harmful,
        harmless,
        judge,
        max_new_tokens=settings.search_tokens,
        degeneration=degeneration,
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
            budget=budget,
            on_trial=lambda trial: run.append([{"key": f"{_TRIAL_KEY}{trial.number}", **trial.as_dict()}]),
            finished=finished,
        )
    else:
        found = _fixed(objectives, fixed, settings.objective, budget)
    write_json_atomic(path, found.as_dict())
    return found


def _fixed(objectives: Objectives, candidate: Candidate, objective: str, budget: Budget) -> SearchResult:
    """A 'search' of one candidate: the user named the direction, and gets it whatever it costs."""
    measured = objectives(candidate)
    trial = Trial(0, candidate, measured, measured.miss(objective), 0.0)
    return SearchResult("fixed", objective, objectives.original, [trial], [trial], trial, budget)


def _search_from_json(data: dict[str, Any], budget: Budget, tolerance: float) -> SearchResult:
    objective = data["objective"]
    trials = [Trial.from_dict(row, objective) for row in data["trials"]]
    saved = data["original"]
    original = Measurement(saved["refusal_rate"], saved["harmful_rate"], 0.0, saved.get("degenerate_rate"))
    if data["sampler"] == "fixed":
        chosen = trials[0]
    else:
        chosen = choose(trials, original, objective, budget, tolerance)
    plan = data.get("plan")
    return SearchResult(
        data["sampler"],
        objective,
        original,
        trials,
        pareto_front(trials),
        chosen,
        budget,
        None if plan is None else SearchPlan([tuple(pair) for pair in plan["grid"]], plan["random"], plan["tpe"]),
    )


def _save_directions(run: RunDir, directions: Directions) -> None:
    from safetensors.torch import save_file

    save_file(
        {"vectors": directions.vectors.contiguous(), "norms": directions.norms.contiguous()},
        str(run.file("directions.safetensors")),
    )
