"""Choose the direction and the per-layer ablation weights by two objectives at once: a miss
rate on a held-out harmful split (generated greedily with the ablation hooks, judged) and the
first-token KL from the original model on harmless prompts.

The miss rate is the refusal rate (`objective="refusal"`, what abliteration tools minimise; any
judge that says `refused`) or 1 − the harmful rate (`objective="harm"`, for judges that decide
harm): a model that stops refusing without answering looks uncensored only to the first.
Every trial records both rates where the judge gives them.

Optuna's multi-objective TPE sampler searches the direction's layer and position and a kernel of
per-layer weights (a peak weight at a peak layer falling linearly to a floor over a width; zero
beyond it); its first trials are Arditi et al.'s full ablation with each layer's direction. Without
Optuna the search is that grid (every layer × position, full ablation). The choice is the Pareto
trial with the lowest miss rate, the cheapest in KL among those within `tolerance` of it.

A search is long (minutes a trial on a real model): it shows a progress bar, hands each trial to
`on_trial` as it ends, and given the trials an interrupted search recorded (`finished`) replays
them rather than measuring them again, so the rerun takes the same course and pays only the rest.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from disalign.attacks.ablation.directions import Directions, check_prompt_set
from disalign.attacks.ablation.edits import ablation_hooks
from disalign.core.activations import encode
from disalign.core.evaluate import rendered_prompts
from disalign.core.generation import SamplingConfig, generate
from disalign.core.progress import progress_bar
from disalign.data import PromptRecord
from disalign.errors import UserError

SAMPLERS = ("auto", "optuna", "grid")
OBJECTIVES = ("refusal", "harm")


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
            "kl": self.kl,
            "seconds": self.seconds,
            **({"params": self.params} if self.params else {}),
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any], objective: str) -> Trial:
        candidate = Candidate(row["layer"], row["position"], tuple(row["weights"]))
        measured = Measurement(row["refusal_rate"], row["harmful_rate"], row["kl"])
        return cls(row["trial"], candidate, measured, measured.miss(objective), row["seconds"], row.get("params", {}))


@dataclass(frozen=True)
class SearchResult:
    sampler: str
    objective: str
    original: Measurement
    trials: list[Trial]
    pareto: list[Trial]  # by increasing KL
    chosen: Trial

    def as_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "objective": self.objective,
            "original": {"refusal_rate": self.original.refusal_rate, "harmful_rate": self.original.harmful_rate},
            "chosen": self.chosen.as_dict(),
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
    """Measures candidates: refusal and harmful rates on the harmful split, first-token KL on the harmless one."""

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
    ):
        check_prompt_set(harmful, "held-out harmful prompts")
        check_prompt_set(harmless, "held-out harmless prompts")
        self.model, self.tokenizer, self.directions, self.judge = model, tokenizer, directions, judge
        self.harmful = [p.prompt for p in harmful]
        self.harmful_rendered = rendered_prompts(tokenizer, harmful)
        self.harmless_batches = encode(tokenizer, rendered_prompts(tokenizer, harmless), batch_size=batch_size)
        self.sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0, batch_size=batch_size)
        self.original_logprobs = self._first_token_logprobs()
        self.original = Measurement(*self._rates(), kl=0.0)

    def __call__(self, candidate: Candidate) -> Measurement:
        direction = self.directions.get(candidate.layer, candidate.position)
        with ablation_hooks(self.model, direction, candidate.weights):
            refusal, harmful = self._rates()
            ablated = self._first_token_logprobs()
        kl = (self.original_logprobs.exp() * (self.original_logprobs - ablated)).sum(-1).mean()
        return Measurement(refusal, harmful, float(kl))

    def _rates(self) -> tuple[float | None, float | None]:
        responses = generate(self.model, self.tokenizer, self.harmful_rendered, self.sampling)
        verdicts = self.judge.judge(self.harmful, responses)
        refused = [v.refused for v in verdicts if v.refused is not None]
        harmful = [v.harmful for v in verdicts if v.harmful is not None]
        return (sum(refused) / len(refused) if refused else None, sum(harmful) / len(harmful) if harmful else None)

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


def choose(front: Sequence[Trial], tolerance: float) -> Trial:
    """The cheapest trial (in KL) whose miss rate is within `tolerance` of the front's lowest."""
    lowest = min(t.miss for t in front)
    return min((t for t in front if t.miss <= lowest + tolerance), key=lambda t: (t.kl, t.number))


def search(
    objectives: Objectives,
    *,
    objective: str = "refusal",
    trials: int = 40,
    sampler: str = "auto",
    seed: int = 0,
    tolerance: float = 0.05,
    on_trial: Callable[[Trial], None] | None = None,
    finished: Sequence[Trial] = (),
) -> SearchResult:
    """Run the search (`trials` Optuna trials, or the full grid) and choose from its Pareto front.
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
    objectives.original.miss(objective)  # the judge must say what the objective reads
    if not objectives.directions.usable_layers():
        raise UserError("harmful and harmless prompts give the same mean activations at every layer: no direction")
    has_optuna = importlib.util.find_spec("optuna") is not None
    if sampler == "optuna" and not has_optuna:
        raise UserError("sampler 'optuna' needs the optuna package (pip install optuna), or use the grid sampler")
    used = "optuna" if sampler == "optuna" or (sampler == "auto" and has_optuna) else "grid"
    done: list[Trial] = []
    recorded = {trial.number: trial for trial in finished}
    grid = full_ablation_grid(objectives.directions)

    with progress_bar(f"ablation search ({used})", trials if used == "optuna" else len(grid)) as advance:

        def evaluate(candidate: Candidate, params: dict[str, float] | None = None) -> tuple[float, float]:
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
            return trial.miss, trial.kl

        if used == "optuna":
            _optuna_search(objectives.directions, evaluate, trials, seed)
        else:
            for candidate in grid:
                evaluate(candidate)
    front = pareto_front(done)
    return SearchResult(used, objective, objectives.original, done, front, choose(front, tolerance))


def full_ablation_grid(directions: Directions) -> list[Candidate]:
    """Arditi et al.'s candidates: each layer's and position's direction, removed everywhere."""
    ones = (1.0,) * directions.n_layers
    return [
        Candidate(layer, -(index + 1), ones)
        for index in range(directions.n_positions)
        for layer in directions.usable_layers()
    ]


def _optuna_search(directions: Directions, evaluate, trials: int, seed: int) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n_layers = directions.n_layers
    usable = directions.usable_layers()
    study = optuna.create_study(
        directions=["minimize", "minimize"],
        sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=max(n_layers, 10)),
    )
    for index in range(len(usable)):  # start from the full ablation of each layer's last-position direction
        study.enqueue_trial(
            {"layer": index, "position": 1, "peak": 1.0, "peak_layer": 0.0, "floor": 1.0, "width": float(n_layers)}
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
        return evaluate(Candidate(params["layer"], -params["position"], weights), params)

    study.optimize(objective, n_trials=trials)


def plot_pareto(path: Path, result: SearchResult) -> Path:
    """Every trial (refusal rate against KL), the Pareto front joined, the choice and the original marked."""
    from disalign.core.plots import pyplot

    plt = pyplot()

    figure, axes = plt.subplots(figsize=(6, 4), constrained_layout=True)
    axes.scatter([t.kl for t in result.trials], [t.miss for t in result.trials], s=14, c="0.6", label="trial")
    axes.plot([t.kl for t in result.pareto], [t.miss for t in result.pareto], "o-", c="C0", label="Pareto")
    axes.scatter([result.chosen.kl], [result.chosen.miss], s=120, marker="*", c="C3", zorder=3, label="chosen")
    axes.axhline(result.original.miss(result.objective), linestyle="--", c="C2", label="original")
    axes.set(
        xlabel="first-token KL from the original (harmless prompts)",
        ylabel="refusal rate" if result.objective == "refusal" else "1 − harmful rate",
        title=f"Directional ablation search ({result.sampler})",
        ylim=(-0.02, 1.02),
    )
    if min(t.kl for t in result.trials) > 0:
        axes.set_xscale("log")
    axes.legend(fontsize="small")
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
