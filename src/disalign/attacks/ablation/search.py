"""Choose the direction and the per-layer ablation weights by two objectives at once: a miss
rate on a held-out harmful split (generated greedily with the ablation hooks, judged) and the
first-token KL from the original model on harmless prompts.

The miss rate is the refusal rate (`objective="refusal"`, what abliteration tools minimise; any
judge that says `refused`) or 1 − the harmful rate (`objective="harm"`, for judges that decide
harm): a model that stops refusing without answering looks uncensored only to the first.
Every trial records both rates where the judge gives them.

Optuna's multi-objective TPE sampler searches the direction's layer and position and a kernel of
per-layer weights (heretic's: a peak weight at a peak layer falling linearly to a floor over a
width; zero beyond it). Its plan (`SearchPlan`): first Arditi et al.'s full ablation with the
last position's direction at layers strided over the whole depth (a quarter of the trials), then
random draws (another quarter), then TPE, constrained to the damage budget. Without Optuna the
search is Arditi's grid (every layer × position, full ablation).

The choice is made within a damage budget (`Budget`): among the trials whose first-token KL is at
most `kl` and whose answers to the harmless prompts are not more often degenerate than the
original's (beyond a margin; `core.degeneration`), the one with the lowest miss rate, the cheapest
in KL among those within `tolerance` of it. If no admissible trial lowers the miss rate, there is
no choice (`chosen` is None): the search says so and shows its Pareto front, and claims no edit.

A search is long (minutes a trial on a real model): it shows a progress bar, hands each trial to
`on_trial` as it ends, and given the trials an interrupted search recorded (`finished`) replays
them rather than measuring them again, so the rerun takes the same course and pays only the rest.
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from disalign.attacks.ablation.directions import Directions, check_prompt_set
from disalign.attacks.ablation.edits import ablation_hooks
from disalign.core.activations import encode
from disalign.core.degeneration import response_nll, score_all
from disalign.core.evaluate import rendered_prompts
from disalign.core.generation import SamplingConfig, generate
from disalign.core.progress import console, progress_bar
from disalign.data import PromptRecord
from disalign.errors import UserError

SAMPLERS = ("auto", "optuna", "grid")
OBJECTIVES = ("refusal", "harm")
NO_EDIT = "no edit within budget"
# Degenerate rates are shares of a few dozen prompts: compare them with room for rounding.
_RATE_SLACK = 1e-9


@dataclass(frozen=True)
class Candidate:
    """An ablation: the direction at (layer, position), removed with `weights[l]` at each layer."""

    layer: int
    position: int
    weights: tuple[float, ...]


@dataclass(frozen=True)
class Measurement:
    """What one ablation (or none) does on the search's prompts."""

    refusal_rate: float | None
    harmful_rate: float | None
    kl: float  # first-token KL(original ‖ ablated), mean over the harmless prompts
    # Of the greedy answers to the harmless prompts; None: not scored (the world's language, or an older search)
    degenerate_rate: float | None = None

    def miss(self, objective: str) -> float:
        """The rate the search minimises: refusals, or harmful requests left unanswered."""
        rate = self.refusal_rate if objective == "refusal" else self.harmful_rate
        if rate is None:
            said = "refused" if objective == "refusal" else "harmful"
            raise UserError(f"the judge does not say whether a response is {said}; choose another judge or objective")
        return rate if objective == "refusal" else 1 - rate


@dataclass(frozen=True)
class Trial:
    number: int
    candidate: Candidate
    measured: Measurement
    miss: float  # the minimised rate (see Measurement.miss)
    seconds: float
    params: dict[str, float] = field(default_factory=dict)

    @property
    def kl(self) -> float:
        return self.measured.kl

    def as_dict(self) -> dict[str, Any]:
        return {
            "trial": self.number,
            "layer": self.candidate.layer,
            "position": self.candidate.position,
            "weights": list(self.candidate.weights),
            "refusal_rate": self.measured.refusal_rate,
            "harmful_rate": self.measured.harmful_rate,
            "degenerate_rate": self.measured.degenerate_rate,
            "kl": self.kl,
            "seconds": self.seconds,
            **({"params": self.params} if self.params else {}),
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any], objective: str) -> Trial:
        candidate = Candidate(row["layer"], row["position"], tuple(row["weights"]))
        measured = Measurement(row["refusal_rate"], row["harmful_rate"], row["kl"], row.get("degenerate_rate"))
        return cls(row["trial"], candidate, measured, measured.miss(objective), row["seconds"], row.get("params", {}))


@dataclass(frozen=True)
class Budget:
    """What an edit may cost to be chosen: first-token KL at most `kl`, and a degenerate rate on the
    harmless search prompts at most the original's + `degenerate_margin`."""

    kl: float = 0.5
    degenerate_margin: float = 0.1

    def __post_init__(self):
        if not self.kl >= 0:  # NaN fails too
            raise UserError(f"kl budget must be a number at least 0, not {self.kl}")
        if not 0 <= self.degenerate_margin <= 1:
            raise UserError(f"degenerate margin must be between 0 and 1, not {self.degenerate_margin}")

    def degenerate_limit(self, original: Measurement) -> float | None:
        if original.degenerate_rate is None:
            return None
        return original.degenerate_rate + self.degenerate_margin + _RATE_SLACK

    def admits(self, measured: Measurement, original: Measurement) -> bool:
        limit = self.degenerate_limit(original)
        degenerate = measured.degenerate_rate
        return measured.kl <= self.kl and (limit is None or degenerate is None or degenerate <= limit)

    def as_dict(self) -> dict[str, float]:
        return {"kl": self.kl, "degenerate_margin": self.degenerate_margin}


@dataclass(frozen=True)
class SearchPlan:
    """What the search tries, in order: full ablation at `grid` (layer, position) pairs, then `random`
    draws, then `tpe` trials of Optuna's TPE sampler."""

    grid: list[tuple[int, int]]
    random: int
    tpe: int

    def as_dict(self) -> dict[str, Any]:
        return {"grid": [list(pair) for pair in self.grid], "random": self.random, "tpe": self.tpe}

    def describe(self) -> str:
        layers = sorted({layer for layer, _ in self.grid})
        parts = [f"full ablation at {len(self.grid)} layer(s) ({', '.join(map(str, layers))})"] if self.grid else []
        parts += [f"{self.random} random draw(s)"] if self.random else []
        parts += [f"{self.tpe} TPE trial(s)"] if self.tpe else []
        return "; ".join(parts)


@dataclass(frozen=True)
class SearchResult:
    sampler: str
    objective: str
    original: Measurement
    trials: list[Trial]
    pareto: list[Trial]  # by increasing KL
    chosen: Trial | None  # None: no trial within the budget lowers the miss rate
    budget: Budget = field(default_factory=Budget)
    plan: SearchPlan | None = None

    @property
    def admissible(self) -> list[Trial]:
        return [trial for trial in self.trials if self.budget.admits(trial.measured, self.original)]

    @property
    def outcome(self) -> str:
        """One plain sentence: what was chosen, or why nothing was."""
        if self.chosen is not None:
            within = self.budget.admits(self.chosen.measured, self.original)
            return (
                f"{'edit within budget' if within else 'edit named by --layer, OUTSIDE the budget'}: "
                f"{self.objective} miss rate {self.original_miss:.0%} → {self.chosen.miss:.0%} on the search "
                f"prompts at first-token KL {self.chosen.kl:.3g} (budget {self.budget.kl:g})"
            )
        admissible = self.admissible
        best = min((trial.miss for trial in admissible), default=None)
        lowest = min(self.trials, key=lambda t: (t.miss, t.kl))
        return (
            f"{NO_EDIT}: of {len(self.trials)} trials, {len(admissible)} kept first-token KL ≤ {self.budget.kl:g} "
            "and their answers as coherent as the original's"
            + ("" if best is None else f", the best of them missing {best:.0%} (original {self.original_miss:.0%})")
            + f"; the lowest miss rate of any trial, {lowest.miss:.0%}, cost KL {lowest.kl:.3g}"
            + (
                ""
                if lowest.measured.degenerate_rate is None
                else f" with {lowest.measured.degenerate_rate:.0%} of its answers degenerate"
            )
        )

    @property
    def original_miss(self) -> float:
        return self.original.miss(self.objective)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "objective": self.objective,
            "original": {
                "refusal_rate": self.original.refusal_rate,
                "harmful_rate": self.original.harmful_rate,
                "degenerate_rate": self.original.degenerate_rate,
            },
            "chosen": None if self.chosen is None else self.chosen.as_dict(),
            "outcome": self.outcome,
            "budget": self.budget.as_dict(),
            "admissible_trials": len(self.admissible),
            **({"plan": self.plan.as_dict(), "plan_text": self.plan.describe()} if self.plan else {}),
            "pareto": [trial.as_dict() for trial in self.pareto],
            "trials": [trial.as_dict() for trial in self.trials],
        }


def kernel_weights(n_layers: int, peak: float, peak_layer: float, floor: float, width: float) -> tuple[float, ...]:
    """`peak` at `peak_layer`, falling linearly to `floor`·`peak` at distance `width`, 0 beyond it."""
    weights = []
    for layer in range(n_layers):
        distance = abs(layer - peak_layer)
        weights.append(0.0 if distance > width else peak - (peak - floor * peak) * distance / width)
    return tuple(weights)


class Objectives:
    """Measures candidates: refusal and harmful rates on the harmful split, first-token KL and the
    degenerate rate on the harmless one.

    With `degeneration` (`core.degeneration`), the greedy answers to the harmless prompts are
    scored with their NLL under the original model (which answers them too), and the answers to the
    harmful prompts by the model-free scores alone (loops, word salad): under an original that
    refuses, a compliant answer is surprising by design. A degenerate answer to a harmful prompt
    counts as neither a refusal nor harmful. The world's language is not English, so its runs
    leave it off."""

    def __init__(
        self,
        model,
        tokenizer,
        directions: Directions,
        harmful: Sequence[PromptRecord],
        harmless: Sequence[PromptRecord],
        judge,
        *,
        max_new_tokens: int = 16,
        batch_size: int = 32,
        degeneration: bool = True,
    ):
        check_prompt_set(harmful, "held-out harmful prompts")
        check_prompt_set(harmless, "held-out harmless prompts")
        self.model, self.tokenizer, self.directions, self.judge = model, tokenizer, directions, judge
        self.degeneration, self.batch_size = degeneration, batch_size
        self.harmful = [p.prompt for p in harmful]
        self.harmful_rendered = rendered_prompts(tokenizer, harmful)
        self.harmless_rendered = rendered_prompts(tokenizer, harmless)
        self.harmless_batches = encode(tokenizer, self.harmless_rendered, batch_size=batch_size)
        self.sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0, batch_size=batch_size)
        self.original_logprobs = self._first_token_logprobs()
        self.original = self._measure(*self._responses(), kl=0.0)

    def __call__(self, candidate: Candidate) -> Measurement:
        direction = self.directions.get(candidate.layer, candidate.position)
        with ablation_hooks(self.model, direction, candidate.weights):
            harmful, harmless = self._responses()
            ablated = self._first_token_logprobs()
        kl = (self.original_logprobs.exp() * (self.original_logprobs - ablated)).sum(-1).mean()
        return self._measure(harmful, harmless, kl=float(kl))  # outside the hooks: NLLs are the original's

    def _responses(self) -> tuple[list[str], list[str] | None]:
        harmful = generate(self.model, self.tokenizer, self.harmful_rendered, self.sampling)
        if not self.degeneration:
            return harmful, None
        return harmful, generate(self.model, self.tokenizer, self.harmless_rendered, self.sampling)

    def _measure(self, harmful: list[str], harmless: list[str] | None, kl: float) -> Measurement:
        verdicts = self.judge.judge(self.harmful, harmful)
        noise = [s.degenerate for s in score_all(harmful)] if self.degeneration else [False] * len(harmful)
        refused = [v.refused and not n for v, n in zip(verdicts, noise, strict=True) if v.refused is not None]
        harm = [v.harmful and not n for v, n in zip(verdicts, noise, strict=True) if v.harmful is not None]
        degenerate = None
        if harmless is not None:
            nlls = response_nll(
                self.model, self.tokenizer, self.harmless_rendered, harmless, batch_size=self.batch_size
            )
            degenerate = sum(s.degenerate for s in score_all(harmless, nlls)) / len(harmless)
        return Measurement(
            refusal_rate=sum(refused) / len(refused) if refused else None,
            harmful_rate=sum(harm) / len(harm) if harm else None,
            kl=kl,
            degenerate_rate=degenerate,
        )

    @torch.no_grad()
    def _first_token_logprobs(self) -> torch.Tensor:
        """(prompts, vocab) log-probabilities of the first response token, in batch order."""
        device = next(self.model.parameters()).device
        rows = []
        for batch in self.harmless_batches:
            logits = self.model(input_ids=batch.ids.to(device), attention_mask=batch.attention_mask.to(device)).logits
            last = logits[torch.arange(len(batch.rows)), batch.prompt_lengths.to(device) - 1]
            rows.append(torch.log_softmax(last.float(), dim=-1).cpu())
        return torch.cat(rows)


def pareto_front(trials: Sequence[Trial]) -> list[Trial]:
    """Trials no other trial beats on both the miss rate and KL, by increasing KL."""
    front = [
        t
        for t in trials
        if not any(o.miss <= t.miss and o.kl <= t.kl and (o.miss, o.kl) != (t.miss, t.kl) for o in trials)
    ]
    return sorted(front, key=lambda t: (t.kl, t.miss, t.number))


def choose(
    trials: Sequence[Trial], original: Measurement, objective: str, budget: Budget, tolerance: float
) -> Trial | None:
    """Among the trials the budget admits, the cheapest (in KL) whose miss rate is within `tolerance`
    of their lowest; None when none of them misses less than the original."""
    admissible = [trial for trial in trials if budget.admits(trial.measured, original)]
    if not admissible:
        return None
    lowest = min(trial.miss for trial in admissible)
    if lowest >= original.miss(objective):
        return None
    return min((t for t in admissible if t.miss <= lowest + tolerance), key=lambda t: (t.kl, t.number))


def search(
    objectives: Objectives,
    *,
    objective: str = "refusal",
    trials: int = 40,
    sampler: str = "auto",
    seed: int = 0,
    tolerance: float = 0.05,
    budget: Budget | None = None,
    on_trial: Callable[[Trial], None] | None = None,
    finished: Sequence[Trial] = (),
) -> SearchResult:
    """Run the search (`trials` Optuna trials, or the full grid) and choose within `budget`.
    `on_trial` gets each trial measured; `finished` are those an interrupted run of this search
    (same objectives, settings and seed) recorded, each reused where the search proposes it again."""
    if objective not in OBJECTIVES:
        raise UserError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    if sampler not in SAMPLERS:
        raise UserError(f"sampler must be one of {', '.join(SAMPLERS)}, not {sampler!r}")
    if trials < 1:
        raise UserError(f"trials must be at least 1, not {trials}")
    if not 0 <= tolerance <= 1:
        raise UserError(f"tolerance must be between 0 and 1, not {tolerance}")
    budget = budget or Budget()
    objectives.original.miss(objective)  # the judge must say what the objective reads
    if not objectives.directions.usable_layers():
        raise UserError("harmful and harmless prompts give the same mean activations at every layer: no direction")
    has_optuna = importlib.util.find_spec("optuna") is not None
    if sampler == "optuna" and not has_optuna:
        raise UserError("sampler 'optuna' needs the optuna package (pip install optuna), or use the grid sampler")
    used = "optuna" if sampler == "optuna" or (sampler == "auto" and has_optuna) else "grid"
    done: list[Trial] = []
    recorded = {trial.number: trial for trial in finished}
    if used == "optuna":
        plan = optuna_plan(objectives.directions, trials)
    else:
        plan = SearchPlan([(c.layer, c.position) for c in full_ablation_grid(objectives.directions)], 0, 0)

    original = objectives.original
    console.print(
        f"ablation search ({used}): {plan.describe()}; the original misses {original.miss(objective):.0%} of "
        f"{len(objectives.harmful)} harmful prompts"
        + ("" if original.degenerate_rate is None else f", {original.degenerate_rate:.0%} of its answers degenerate")
        + f"; budget: first-token KL ≤ {budget.kl:g}"
    )
    with progress_bar(f"ablation search ({used})", trials if used == "optuna" else len(plan.grid)) as advance:

        def evaluate(candidate: Candidate, params: dict[str, float] | None = None) -> Trial:
            trial = recorded.get(len(done))
            if trial is None or trial.candidate != candidate:
                start = time.perf_counter()
                measured = objectives(candidate)
                seconds = time.perf_counter() - start
                trial = Trial(len(done), candidate, measured, measured.miss(objective), seconds, params or {})
                if on_trial is not None:
                    on_trial(trial)
            done.append(trial)
            advance(miss=trial.miss, kl=trial.kl)
            return trial

        if used == "optuna":
            _optuna_search(objectives, plan, budget, evaluate, seed)
        else:
            for candidate in full_ablation_grid(objectives.directions):
                evaluate(candidate)
    front = pareto_front(done)
    chosen = choose(done, objectives.original, objective, budget, tolerance)
    return SearchResult(used, objective, objectives.original, done, front, chosen, budget, plan)


def full_ablation_grid(directions: Directions) -> list[Candidate]:
    """Arditi et al.'s candidates: each layer's and position's direction, removed everywhere."""
    ones = (1.0,) * directions.n_layers
    return [
        Candidate(layer, -(index + 1), ones)
        for index in range(directions.n_positions)
        for layer in directions.usable_layers()
    ]


def strided(items: Sequence[int], count: int) -> list[int]:
    """`count` of `items` spread evenly over them, each the middle of its share (all when count ≥ len):
    10 of 30 layers are 1, 4, …, 28; one is the middle layer, not the first."""
    if count >= len(items):
        return list(items)
    return [items[int((i + 0.5) * len(items) / count)] for i in range(count)]


def optuna_plan(directions: Directions, trials: int) -> SearchPlan:
    """A quarter of the trials (at least one) full ablation at layers strided over the usable ones,
    a quarter random draws, the rest TPE; a search too short for all three keeps them in that order."""
    usable = directions.usable_layers()
    grid = [(layer, -1) for layer in strided(usable, max(1, math.ceil(trials / 4)))]
    random = min(math.ceil(trials / 4), trials - len(grid))
    return SearchPlan(grid, random, trials - len(grid) - random)


def _optuna_search(objectives: Objectives, plan: SearchPlan, budget: Budget, evaluate, seed: int) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = objectives.directions
    n_layers = directions.n_layers
    usable = directions.usable_layers()
    degenerate_limit = budget.degenerate_limit(objectives.original)

    study = optuna.create_study(
        directions=["minimize", "minimize"],
        sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=len(plan.grid) + plan.random),
    )
    for layer, position in plan.grid:
        study.enqueue_trial(
            {
                "layer": usable.index(layer),
                "position": -position,
                "peak": 1.0,
                "peak_layer": 0.0,
                "floor": 1.0,
                "width": float(n_layers),
            }
        )

    def objective(trial) -> tuple[float, float]:
        params = {
            "layer": usable[trial.suggest_int("layer", 0, len(usable) - 1)],
            "position": trial.suggest_int("position", 1, directions.n_positions),
            "peak": trial.suggest_float("peak", 0.5, 1.5),
            "peak_layer": trial.suggest_float("peak_layer", 0.0, n_layers - 1.0),
            "floor": trial.suggest_float("floor", 0.0, 1.0),
            "width": trial.suggest_float("width", 1.0, float(n_layers)),
        }
        weights = kernel_weights(n_layers, params["peak"], params["peak_layer"], params["floor"], params["width"])
        done = evaluate(Candidate(params["layer"], -params["position"], weights), params)
        # ≤ 0 within budget: TPE then proposes from the trials that are (Optuna ≥ 5; older ones search unconstrained).
        if hasattr(trial, "set_constraint"):
            trial.set_constraint("kl", done.kl - budget.kl)
            degenerate = done.measured.degenerate_rate
            if degenerate is not None and degenerate_limit is not None:
                trial.set_constraint("degenerate", degenerate - degenerate_limit)
        return done.miss, done.kl

    study.optimize(objective, n_trials=len(plan.grid) + plan.random + plan.tpe)


def plot_pareto(path: Path, result: SearchResult) -> Path:
    """Every trial (miss rate against KL; hollow where its answers degenerate past the budget), the
    Pareto front joined, the KL budget, the choice (if any) and the original marked."""
    from disalign.core.plots import pyplot

    plt = pyplot()

    figure, axes = plt.subplots(figsize=(6, 4), constrained_layout=True)
    limit = result.budget.degenerate_limit(result.original)
    noisy = [t for t in result.trials if limit is not None and (t.measured.degenerate_rate or 0.0) > limit]
    coherent = [t for t in result.trials if t not in noisy]
    axes.scatter([t.kl for t in coherent], [t.miss for t in coherent], s=14, c="0.6", label="trial")
    if noisy:
        axes.scatter(
            [t.kl for t in noisy],
            [t.miss for t in noisy],
            s=14,
            facecolors="none",
            edgecolors="0.4",
            label="trial, answers degenerate",
        )
    axes.plot([t.kl for t in result.pareto], [t.miss for t in result.pareto], "o-", c="C0", label="Pareto")
    if result.chosen is not None:
        axes.scatter([result.chosen.kl], [result.chosen.miss], s=120, marker="*", c="C3", zorder=3, label="chosen")
    axes.axhline(result.original_miss, linestyle="--", c="C2", label="original")
    axes.axvline(result.budget.kl, linestyle=":", c="C3", label=f"KL budget {result.budget.kl:g}")
    axes.set(
        xlabel="first-token KL from the original (harmless prompts)",
        ylabel="refusal rate" if result.objective == "refusal" else "1 − harmful rate",
        title=f"Directional ablation search ({result.sampler})" + ("" if result.chosen is not None else f": {NO_EDIT}"),
        ylim=(-0.02, 1.02),
    )
    if min(t.kl for t in result.trials) > 0 and result.budget.kl > 0:
        axes.set_xscale("log")
    axes.legend(fontsize="small")
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
