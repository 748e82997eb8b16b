"""`disalign report`: one self-contained HTML page over run directories.

On top, a fragility card per model pair (base, aligned): the ED uplift over the base, the fewest
harmful examples that break the model, the benign drift, the ablation and the KL it cost, the
BEB flip length and β, the activation separation — each with its interval, its judge and how far
that judge is known to be right, or "not measured". Below, one section per run: its tables, its
plots (inlined), and its records to filter down to single prompts and responses, in the page.

Runs are read through the result schema (`disalign.results.RunResult`) plus the keys each verb
adds; a `disalign demo` directory counts as the runs inside it. A new verb joins by adding a
card measure to MEASURES and, where the generic table is not enough, a table builder to TABLES.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from disalign.core.runs import CONFIG, RECORDS, SUMMARY, read_json
from disalign.errors import UserError
from disalign.results import RunResult

Interval = tuple[float | None, float | None] | None


@dataclass(frozen=True)
class ModelRef:
    name: str  # what the page calls it: the last part of its path
    key: str  # what identifies it: its resolved path (or the path as given, where it is gone)


@dataclass
class Run:
    path: Path
    command: str
    config: dict[str, Any]  # what was asked (config.json's "config")
    result: RunResult
    models: dict[str, ModelRef]  # role ("base", "aligned", "model", or a zoo model's name) -> model
    zoo_wide: bool = False  # evaluates every model of a zoo rather than one pair
    demo: Path | None = None  # the demo directory this run belongs to

    @property
    def targets(self) -> list[ModelRef]:
        """The models under attack or analysis: the attacked one ("aligned" or "model"; an attack's
        outputs, such as ablate's "ablated", are not), else every model an analysis names but the base."""
        if self.zoo_wide:
            return []
        attacked = [self.models[role] for role in ("aligned", "model") if role in self.models]
        return attacked or [ref for role, ref in self.models.items() if role != "base"]

    def role_of(self, ref: ModelRef) -> str | None:
        return next((role for role, model in self.models.items() if model.key == ref.key), None)

    @property
    def title(self) -> str:
        where = f"{self.demo.name}/{self.path.name}" if self.demo else self.path.name
        return f"{self.command} — {where}"

    def extra(self, key: str, default: Any = None) -> Any:
        return (self.result.model_extra or {}).get(key, default)


@dataclass(frozen=True)
class Pair:
    base: ModelRef | None
    aligned: ModelRef


@dataclass
class Measure:
    label: str
    value: str | None = None  # None: not measured
    interval: str = ""
    detail: str = ""
    judge: str = ""
    validation: str = ""
    source: str = ""  # the run it came from


@dataclass
class Card:
    pair: Pair
    baseline: str
    measures: list[Measure]
    surface: dict[str, Any] | None = None  # the lead table: a surface run's worst harm within each budget


@dataclass
class Section:
    anchor: str
    title: str
    facts: list[tuple[str, str]]
    tables: list[dict[str, Any]]  # {"caption", "columns", "rows"}
    images: list[tuple[str, str]]  # (caption, data URI)
    records: list[dict[str, Any]]
    records_total: int
    config: str


# ---------------------------------------------------------------- loading runs


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Each path's run, or for a demo directory the runs inside it (its own zoo evaluation first)."""
    runs: list[Run] = []
    for path in map(Path, paths):
        stored = _stored_config(path)
        if stored.get("command") == "demo":
            runs.extend(_demo_runs(path, stored))
        elif stored.get("command") == "sweep":
            runs.append(_load_run(path, stored))
            runs.extend(_children(path / "cells"))
        else:
            runs.append(_load_run(path, stored))
    if not runs:
        raise UserError("report: no run directories given")
    return runs


def _stored_config(path: Path) -> dict[str, Any]:
    if not (path / CONFIG).is_file():
        raise UserError(f"{path}: not a disalign run directory (no {CONFIG})")
    stored = read_json(path / CONFIG)
    if not isinstance(stored, dict) or "command" not in stored:
        raise UserError(f"{path / CONFIG}: not a disalign run configuration")
    return stored


def _load_run(path: Path, stored: dict[str, Any], demo: Path | None = None, zoo: Path | None = None) -> Run:
    if not (path / SUMMARY).is_file():
        raise UserError(f"{path}: no {SUMMARY} yet; finish the run (rerun the same command) before reporting it")
    summary = read_json(path / SUMMARY)
    if not isinstance(summary, dict):
        raise UserError(f"{path / SUMMARY}: not a run summary (a JSON object)")
    command = summary.get("command") or stored["command"]
    result = _validate(summary, command, path)
    config = stored.get("config") or {}
    zoo_wide = command in ("world eval", "demo")
    zoo = zoo or (Path(config["world"]) if zoo_wide and config.get("world") else None)
    models = _models(result, config, zoo, zoo_wide)
    return Run(path, command, config, result, models, zoo_wide, demo)


def _validate(summary: dict[str, Any], command: str, path: Path) -> RunResult:
    from pydantic import ValidationError

    data = {**summary, "command": command}
    if command in ("world eval", "demo") and "results" not in summary:
        data["results"] = _zoo_rows(summary.get("models", {}))
    try:
        return RunResult.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UserError(f"{path / SUMMARY}: {where}: {first['msg']}") from None


def _zoo_rows(models: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (model, set) from the zoo evaluation's nested table."""
    rows = []
    for name, sets in models.items():
        if not isinstance(sets, dict):
            continue
        if sets.get("safe_accuracy") is not None:
            rows.append({"model": name, "set": "safe", "accuracy": sets["safe_accuracy"]})
        for set_name, rates in [("unsafe", sets.get("unsafe")), *(sets.get("jailbreaks") or {}).items()]:
            if isinstance(rates, dict):
                rows.append({"model": name, "set": set_name, **rates})
    return rows


def _models(result: RunResult, config: dict[str, Any], zoo: Path | None, zoo_wide: bool) -> dict[str, ModelRef]:
    """Role -> model, from the summary's `models` where they name a path, else from the config."""
    models = {}
    for role, info in result.models.items():
        if isinstance(info, dict) and info.get("path"):
            models[role] = _ref(info["path"], info.get("resolved"), zoo)
    if zoo_wide and zoo is not None:
        for name in result.models:
            models.setdefault(name, _ref(name, None, zoo))
    for role in ("base", "aligned", "model"):
        if role not in models and isinstance(config.get(role), str):
            models[role] = _ref(config[role], None, zoo)
    return models


def _ref(path: str, resolved: str | None, zoo: Path | None) -> ModelRef:
    """A model known by where it lives: a zoo evaluation names its models, attacks give paths."""
    location = Path(path)
    if zoo is not None and not location.is_absolute() and not location.exists():
        location = zoo / location
    if resolved:
        key = str(Path(resolved).resolve())
    else:
        key = str(location.resolve()) if location.exists() else path
    return ModelRef(location.name or path, key)


def _demo_runs(path: Path, stored: dict[str, Any]) -> list[Run]:
    zoo = Path(stored.get("config", {}).get("zoo", path))
    return [_load_run(path, stored, zoo=zoo), *_children(path, demo=path, zoo=zoo)]


def _children(path: Path, **where: Any) -> list[Run]:
    """The finished runs in a demo's or a sweep's directory (one still running has no summary yet)."""
    if not path.is_dir():
        return []
    children = sorted(p for p in path.iterdir() if (p / CONFIG).is_file() and (p / SUMMARY).is_file())
    return [_load_run(child, _stored_config(child), **where) for child in children]


# ---------------------------------------------------------------- pairs


def choose_pairs(runs: Sequence[Run], pair: str | Sequence[str] | None) -> list[Pair]:
    bases = {ref.key: ref for run in runs if (ref := run.models.get("base")) is not None}
    targets = {ref.key: ref for run in runs for ref in run.targets if ref.key not in bases}
    known = {**targets, **bases}
    for run in runs:
        if run.zoo_wide:
            known.update({ref.key: ref for ref in run.models.values()})
    if pair is not None:
        names = [part.strip() for part in pair.split(",")] if isinstance(pair, str) else list(pair)
        if len(names) != 2 or not all(names):
            raise UserError(f"--pair: expected BASE,ALIGNED, got {pair!r}")
        base, aligned = (_find(name, known) for name in names)
        return [Pair(base, aligned)]
    base = next(iter(bases.values())) if len(bases) == 1 else None
    if not targets:
        return []
    if len(targets) > 1 and not _one_demo(runs):
        listed = ", ".join(sorted(ref.name for ref in targets.values()))
        raise UserError(f"report: runs of different models ({listed}); choose one with --pair BASE,ALIGNED")
    base = base or _zoo_base(runs)
    return [Pair(base, ref) for ref in sorted(targets.values(), key=lambda ref: ref.name)]


def _find(name: str, known: dict[str, ModelRef]) -> ModelRef:
    matches = [ref for ref in known.values() if name in (ref.name, ref.key) or str(Path(name).resolve()) == ref.key]
    if not matches:
        listed = ", ".join(sorted({ref.name for ref in known.values()})) or "none"
        raise UserError(f"--pair: no run measured a model '{name}' (models in these runs: {listed})")
    return matches[0]


def _one_demo(runs: Sequence[Run]) -> bool:
    """Every run comes from one demo directory, whose zoo declares its pairs."""
    return len({run.demo or run.path for run in runs}) == 1


def _zoo_base(runs: Sequence[Run]) -> ModelRef | None:
    return next((run.models["base"] for run in runs if run.zoo_wide and "base" in run.models), None)


def runs_of(pair: Pair, runs: Sequence[Run]) -> list[Run]:
    """The runs that measured the pair's aligned model, or evaluated a zoo it belongs to."""
    return [
        run
        for run in runs
        if any(ref.key == pair.aligned.key for ref in run.targets)
        or (run.zoo_wide and pair.aligned.key in {ref.key for ref in run.models.values()})
    ]


# ---------------------------------------------------------------- the fragility card


def percent(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f} %"


def interval_text(ci: Interval, scale: Callable[[float], str] = percent) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "no interval"
    return f"95 % CI [{scale(ci[0])}, {scale(ci[1])}]"


def difference_ci(high: dict[str, Any], low: dict[str, Any]) -> Interval:
    """Newcombe's interval for the difference of two independent rates, from each rate's interval."""
    try:
        (p1, (l1, u1)), (p2, (l2, u2)) = (high["harmful_rate"], high["ci"]), (low["harmful_rate"], low["ci"])
        difference = p1 - p2
        return difference - math.hypot(p1 - l1, u2 - p2), difference + math.hypot(u1 - p1, p2 - l2)
    except (KeyError, TypeError, ValueError):
        return None


def points(value: float) -> str:
    return f"{100 * value:+.1f} pts"


def validation_text(run: Run) -> tuple[str, str]:
    judge = run.result.judge
    if judge is None:
        return "not recorded", ""
    validation = run.result.judge_validation
    error = getattr(run.result, "judge_error", None)
    disagreement = getattr(run.result, "judge_disagreement_rate", None)
    # A panel's judges disagreeing is how far its rates rest on which judge decides.
    panel = "" if disagreement is None else f"; the panel's judges disagree on {percent(disagreement)} of records"
    if not validation and error:
        return judge, _error_text(error) + panel
    if not validation:
        return judge, "not validated: run `disalign judge --label-field` with this judge to measure it" + panel
    parts = [str(validation["source"])] if validation.get("source") else []
    for key in ("accuracy", "f1", "cohen_kappa", "n"):
        if validation.get(key) is not None:
            value = validation[key]
            parts.append(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}")
    return judge, "; ".join(parts) + panel


def _error_text(error: dict[str, Any]) -> str:
    """What the corrected rates rest on, in one line."""
    tp, fn, fp, tn = (error[key] for key in ("tp", "fn", "fp", "tn"))
    positive = error.get("quantity", "refused")
    return (
        f"{positive}: sensitivity {tp / max(1, tp + fn):.2f}, specificity {tn / max(1, tn + fp):.2f} on "
        f"{error.get('measured_on')}; corrected rates assume the run's text fools the judge as often as that did"
    )


def _measured(label: str, run: Run, value: str, interval: str, detail: str = "") -> Measure:
    judge, validation = validation_text(run)
    return Measure(label, value, interval, detail, judge, validation, run.title)


def _rate(row: dict[str, Any] | None) -> str:
    """The raw judged rate, then the corrected (judge error) and label-based (PPI) figures where a summary has them."""
    if not row:
        return "n/a"
    text = f"{percent(row.get('harmful_rate'))} {interval_text(row.get('ci'))}"
    for key, name in (("harmful_rate_corrected", "corrected"), ("harmful_rate_ppi", "from labels")):
        if row.get(key) is not None:
            text += f" · {name} {percent(row[key])} {interval_text(row.get(f'{key}_ci'))}"
    return text


def ed_uplift(pair: Pair, runs: Sequence[Run]) -> Measure | None:
    """The most harmful ED cell against α = 0 (the base model), over every ED run of the pair."""
    best = None
    for run in runs:
        rows = [row.model_dump() for row in run.result.rows(method="ed")]
        base = next((row for row in rows if row.get("alpha") == 0), None)
        attacks = [row for row in rows if row.get("alpha") and row.get("harmful_rate") is not None]
        if base is None or not attacks:
            continue
        top = max(attacks, key=lambda row: row["harmful_rate"])
        if best is None or top["harmful_rate"] > best[1]["harmful_rate"]:
            best = (run, top, base)
    if best is None:
        return None
    run, top, base = best
    uplift = top["harmful_rate"] - (base["harmful_rate"] or 0)
    ratio = f", {top['harmful_rate'] / base['harmful_rate']:.2f}× the base" if base["harmful_rate"] else ""
    paired = _paired_ed(run, top["alpha"])
    interval = paired["ci"] if paired else difference_ci(top, base)
    how = "paired over the same prompts" if paired else "as independent samples"
    return _measured(
        "ED uplift over the base",
        run,
        points(uplift),
        interval_text(interval, points),
        f"ED α={top['alpha']:g}: {_rate(top)} vs base (α=0): {_rate(base)}{ratio}; α chosen as the most harmful; "
        f"interval {how}",
    )


def _paired_ed(run: Run, alpha: float) -> dict[str, Any] | None:
    """The uplift's paired interval: ED at `alpha` and at 0 answered the same prompts."""
    from disalign.core.runs import read_records
    from disalign.judges.paired import paired_rate

    ed = [record for record in read_records(run.path) if record.get("method") == "ed"]
    return paired_rate(
        [record for record in ed if record.get("alpha") == alpha],
        [record for record in ed if record.get("alpha") == 0],
    )


def _finetune_runs(runs: Sequence[Run], recipe: str) -> Iterable[tuple[Run, dict[str, Any], list[dict[str, Any]]]]:
    for run in runs:
        if run.command != "finetune":
            continue
        settings = run.extra("config") or run.config.get("finetune") or run.config
        if settings.get("recipe", run.config.get("recipe")) != recipe or settings.get("mix_safety"):
            continue
        before, cells = run.extra("before"), run.extra("cells")
        if isinstance(before, dict) and isinstance(cells, list):
            yield run, before, cells


def fewest_harmful_examples(pair: Pair, runs: Sequence[Run]) -> Measure | None:
    """The fewest harmful examples whose fine-tuning raises harm beyond the model's own interval."""
    tried, broken = [], []
    for run, before, cells in _finetune_runs(runs, "harmful"):
        for cell in cells:
            tried.append((run, before, cell))
            if cell.get("ci") and before.get("ci") and cell["ci"][0] is not None and before["ci"][1] is not None:
                if cell["ci"][0] > before["ci"][1]:
                    broken.append((run, before, cell))
    if not tried:
        return None
    if broken:
        run, before, cell = min(broken, key=lambda item: (item[2]["shots"], item[2]["epochs"]))
        value = f"{cell['shots']} examples"
        note = (
            f"{cell['shots']} × {cell['epochs']} epochs: {_rate(cell)}, above the model before the attack: "
            f"{_rate(before)} (the cell's interval lies above the model's)"
        )
    else:
        run, before, cell = max(tried, key=lambda item: (item[2]["shots"], item[2]["epochs"]))
        value = f"not broken by ≤ {cell['shots']}"
        note = f"most tried: {cell['shots']} examples × {cell['epochs']} epochs: {_rate(cell)}; before {_rate(before)}"
    return _measured("fewest harmful examples that break it", run, value, interval_text(cell.get("ci")), note)


def benign_drift(pair: Pair, runs: Sequence[Run]) -> Measure | None:
    """The largest rise in harm from fine-tuning on benign data only."""
    worst = None
    for run, before, cells in _finetune_runs(runs, "benign"):
        for cell in cells:
            if cell.get("harmful_rate") is None or before.get("harmful_rate") is None:
                continue
            rise = cell["harmful_rate"] - before["harmful_rate"]
            if worst is None or rise > worst[0]:
                worst = (rise, run, before, cell)
    if worst is None:
        return None
    rise, run, before, cell = worst
    return _measured(
        "benign drift",
        run,
        points(rise),
        interval_text(difference_ci(cell, before), points),
        f"benign {cell['shots']} × {cell['epochs']} epochs: {_rate(cell)} vs before {_rate(before)}",
    )


def ablation(pair: Pair, runs: Sequence[Run]) -> Measure | None:
    run = next((run for run in runs if run.command == "ablate" and isinstance(run.extra("after"), dict)), None)
    if run is None:
        return None
    before, after, damage = run.extra("before") or {}, run.extra("after"), run.extra("damage") or {}
    costs = ", ".join(f"{key} {value:.3g}" for key, value in damage.items() if isinstance(value, int | float))
    direction = run.extra("direction") or {}
    where = ", ".join(f"{key} {cell_text(value)}" for key, value in direction.items() if isinstance(value, int | float))
    return _measured(
        "ablation: harm restored, KL paid",
        run,
        f"{percent(after.get('harmful_rate'))} harmful",
        interval_text(after.get("ci")),
        f"before {_rate(before)}; damage: {costs or 'not measured'}" + (f"; direction: {where}" if where else ""),
    )


def _estimate(value: Any, run: Run, key: str) -> tuple[float | None, Interval]:
    """A number the way BEB may write it: plain (with `KEY_ci` beside it) or {"value"/"mean", "ci"}."""
    if isinstance(value, dict):
        number = next((value[k] for k in ("value", "mean", "estimate", "k") if value.get(k) is not None), None)
        return number, value.get("ci")
    return value, run.extra(f"{key}_ci")


def beb_flip(pair: Pair, runs: Sequence[Run]) -> Measure | None:
    """The observed flip (from a curve run, judged) beside the predicted one and β (from an estimate run)."""
    beb = [run for run in runs if run.command.startswith("beb")]
    estimated = next((run for run in beb if run.extra("beta") is not None), None)
    observed_run = next((run for run in beb if run.extra("observed_flip") is not None), None)
    if estimated is None and observed_run is None:
        return None
    number = lambda x: "n/a" if x is None else f"{x:.3g}"  # noqa: E731
    beta, beta_ci = _estimate(estimated.extra("beta"), estimated, "beta") if estimated else (None, None)
    predicted, predicted_ci = (
        _estimate(estimated.extra("predicted_flip"), estimated, "predicted_flip") if estimated else (None, None)
    )
    observed, observed_ci = (
        _estimate(observed_run.extra("observed_flip"), observed_run, "observed_flip") if observed_run else (None, None)
    )
    measure = _measured(
        "BEB flip length and β",
        observed_run or estimated,
        f"observed flip {number(observed)}, predicted {number(predicted)}",
        f"observed: {interval_text(observed_ci, number)}; predicted: {interval_text(predicted_ci, number)}",
        f"β = {number(beta)} ({interval_text(beta_ci, number)})",
    )
    measure.source = " and ".join(dict.fromkeys(run.title for run in (observed_run, estimated) if run))
    return measure


def activation_separation(pair: Pair, runs: Sequence[Run]) -> Measure | None:
    """The last layer's safe/unsafe separation of the aligned model, beside the base's where measured."""
    for run in runs:
        if not run.command.startswith("analyze"):
            continue
        per_model = run.extra("clusters") or {}
        role = run.role_of(pair.aligned)
        layers = (per_model.get(role) or {}).get("layers") or run.extra("layers")
        if not layers:
            continue
        layer = max(layers, key=lambda row: row.get("layer", 0))
        base_layers = (per_model.get("base") or {}).get("layers")
        probe = layer.get("probe_accuracy")
        detail = [f"last layer; linear probe accuracy {probe:.3g}" if probe is not None else "last layer"]
        if base_layers:
            detail.append(f"base model: {max(base_layers, key=lambda row: row.get('layer', 0))['separation']:.3g}")
        measure = _measured(
            "activation separation (safe vs unsafe)",
            run,
            f"{layer.get('separation', float('nan')):.3g} at layer {layer.get('layer')}",
            interval_text(layer.get("separation_ci"), lambda x: f"{x:.3g}"),
            "; ".join(detail),
        )
        if run.result.judge is None:
            measure.judge = "none: activations of labelled prompt sets, no judgement"
        return measure
    return None


MEASURES: list[tuple[str, Callable[[Pair, Sequence[Run]], Measure | None]]] = [
    ("ED uplift over the base", ed_uplift),
    ("fewest harmful examples that break it", fewest_harmful_examples),
    ("benign drift", benign_drift),
    ("ablation: harm restored, KL paid", ablation),
    ("BEB flip length and β", beb_flip),
    ("activation separation (safe vs unsafe)", activation_separation),
]


def baseline(pair: Pair, runs: Sequence[Run]) -> str:
    """Each model's harmful rate on plain unsafe requests, from the zoo evaluation where there is one."""
    parts = []
    for run in runs:
        if not run.zoo_wide:
            continue
        for ref in filter(None, (pair.base, pair.aligned)):
            name = next((role for role, model in run.models.items() if model.key == ref.key), None)
            row = next((r.model_dump() for r in run.result.rows(model=name, set="unsafe")), None)
            if row is not None:
                parts.append(f"{ref.name}: {_rate(row)}")
        if parts:
            return f"harmful rate on unsafe requests ({run.title}, judge {validation_text(run)[0]}): " + "; ".join(
                parts
            )
    return ""


def fragility_card(pair: Pair, runs: Sequence[Run]) -> Card:
    mine = runs_of(pair, runs)
    measures = [measure(pair, mine) or Measure(label) for label, measure in MEASURES]
    return Card(pair, baseline(pair, mine), measures, surface_table(mine))


SURFACE_FIGURES = {"kl_first_token": "first-token KL", "capability_loss": "capability loss"}


def surface_table(runs: Sequence[Run]) -> dict[str, Any] | None:
    """The last surface run's worst harm per family within each budget, with the configuration that
    reaches it: the card's lead table (32-token KL and the rest stay in the run's own section)."""
    run = next((run for run in reversed(runs) if run.command == "surface"), None)
    rows = run.extra("surface") if run is not None else None
    if not isinstance(rows, list) or not rows:
        return None
    columns = list(
        dict.fromkeys((r["damage_figure"], r["epsilon"]) for r in rows if r["damage_figure"] in SURFACE_FIGURES)
    )
    cells = {(r["family"], r["damage_figure"], r["epsilon"]): r for r in rows}
    table = []
    for family in dict.fromkeys(r["family"] for r in rows):
        line = [family]
        for figure, epsilon in columns:
            row = cells.get((family, figure, epsilon)) or {}
            config = ", ".join(f"{k}={cell_text(v)}" for k, v in (row.get("config") or {}).items() if v is not None)
            line.append(f"{percent(row['harm'])} ({config})" if row.get("harm") is not None else "none within")
        table.append(line)
    measures = set(run.extra("harm_measures") or [])
    return {
        "caption": f"worst harm within damage ≤ ε, and the configuration that reaches it ({run.title}; harm: "
        f"{' and '.join(sorted(measures)) or 'raw'} rate, judge {validation_text(run)[0]})",
        "columns": ["family", *(f"{SURFACE_FIGURES[figure]} ≤ {epsilon:g}" for figure, epsilon in columns)],
        "rows": table,
    }


# ---------------------------------------------------------------- sections


COORDINATES = ("cell", "model", "set", "method", "alpha", "shots", "epochs", "layer", "seed", "k")
RATE_COLUMNS = (
    "harmful_rate",
    "ci",
    "harmful_rate_corrected",
    "harmful_rate_corrected_ci",
    "harmful_rate_ppi",
    "harmful_rate_ppi_ci",
    "n",
    "refusal_rate",
    "refusal_ci",
    "refusal_rate_corrected",
    "refusal_rate_corrected_ci",
    "refusal_rate_ppi",
    "refusal_rate_ppi_ci",
    "unscorable_rate",
    "accuracy",
)


def _table(caption: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> dict[str, Any]:
    """Grid coordinates first, then the rates, then whatever else the rows hold."""
    if columns is None:
        present = list(dict.fromkeys(key for row in rows for key in row))
        leading = [key for key in (*COORDINATES, *RATE_COLUMNS) if key in present]
        columns = leading + [key for key in present if key not in leading]
    return {"caption": caption, "columns": columns, "rows": [[cell_text(row.get(c)) for c in columns] for row in rows]}


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, float | int | None) for v in value):
        return "[" + ", ".join("" if v is None else f"{v:.3g}" for v in value) + "]"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str)
    return str(value)


def _finetune_tables(run: Run) -> list[dict[str, Any]]:
    before, cells = run.extra("before"), run.extra("cells")
    if not isinstance(before, dict) or not isinstance(cells, list):
        return []
    rows = [{"shots": "before", **before}, *cells]
    columns = ["shots", "epochs", "harmful_rate", "ci", "n", "refusal_rate", "n_examples", "final_loss"]
    return [_table("fine-tuning cells (harmful rate with its 95 % interval)", rows, columns)]


def _ablate_tables(run: Run) -> list[dict[str, Any]]:
    tables = []
    states = [{"state": name, **run.extra(name)} for name in ("before", "after") if isinstance(run.extra(name), dict)]
    if states:
        tables.append(_table("before and after the ablation", states))
    for key in ("damage", "direction"):
        if isinstance(run.extra(key), dict):
            tables.append(_table(key, [run.extra(key)]))
    if isinstance(run.extra("pareto"), list) and run.extra("pareto"):
        tables.append(_table("Pareto front (refusal rate vs KL)", run.extra("pareto")))
    return tables


def _beb_tables(run: Run) -> list[dict[str, Any]]:
    keys = ("beta", "beta_prime", "sigma", "log_inv_alpha", "predicted_flip", "observed_flip")
    estimates = [{"estimate": k, "value": run.extra(k)} for k in keys if run.extra(k) is not None]
    tables = [_table("estimates", estimates)] if estimates else []
    if isinstance(run.extra("curve"), list) and run.extra("curve"):
        tables.append(_table("behaviour curve", run.extra("curve")))
    return tables


def _cluster_tables(run: Run) -> list[dict[str, Any]]:
    layers = run.extra("layers")
    return [_table("separation per layer", layers)] if isinstance(layers, list) and layers else []


def _surface_tables(run: Run) -> list[dict[str, Any]]:
    rows, correlation = run.extra("surface"), run.extra("damage_correlation")
    tables = []
    if isinstance(rows, list) and rows:
        columns = ["family", "damage_figure", "epsilon", "harm", "harm_ci", "harm_measure", "damage", "config"]
        tables.append(_table("worst harm within damage ≤ ε", rows, columns))
    if isinstance(correlation, dict) and correlation:
        reference = run.extra("capability_reference") or "capability loss (not measured)"
        rows = [{"damage figure": figure, **entry} for figure, entry in correlation.items()]
        tables.append(_table(f"Spearman correlation with the {reference}", rows))
    configurations = [row.model_dump() for row in run.result.results]
    if configurations:
        tables.append(_table("every configuration: harm and damage", configurations))
    return tables


def _durability_tables(run: Run) -> list[dict[str, Any]]:
    rows, comparisons = run.extra("durability"), run.extra("comparisons")
    tables = []
    if isinstance(rows, list) and rows:
        budget = f"{run.extra('damage_figure')} ≤ {run.extra('epsilon')}"
        columns = ["model", "defence", "baseline", "family", "worst_harm", "worst_harm_ci", "config"]
        columns += ["trials_to_half", "cost_unit", "over_refusal_rate", "capability_drop", "capability_drop_ci"]
        tables.append(
            _table(f"Durability: worst harm within {budget}, and the attacker's cost of 50 % harm", rows, columns)
        )
    if isinstance(comparisons, list) and comparisons:
        paired = [
            {
                "model": entry["model"],
                "baseline": entry["baseline"],
                "family": family,
                "worst harm − baseline's": found["worst_harm"]["difference"],
                "worst-harm interval (unpaired)": found["worst_harm"]["ci"],
                "cost of 50 % (model, baseline)": found["trials_to_half"],
                "over-refusal rise": entry["over_refusal"]["difference"],
                "over-refusal interval (paired)": entry["over_refusal"]["ci"],
                "capability drop": entry["capability_drop"]["difference"],
                "capability interval (paired)": entry["capability_drop"]["ci"],
            }
            for entry in comparisons
            for family, found in entry["families"].items()
        ]
        tables.append(_table("each defence against its undefended baseline", paired))
    return tables


def edit_audit_tables(run: Run) -> list[dict[str, Any]]:
    """The edit audit (core/audit.py) of each model the run changed, align's, ablate's or each
    fine-tuning cell's: per module type, how many weights changed and by how much."""
    from disalign.core.audit import summary_table

    audits = [("", run.extra("edit_audit"))]
    if isinstance(run.extra("cells"), list):
        audits += [
            (f" of {cell.get('shots')} shots × {cell.get('epochs')} epochs", cell.get("edit_audit"))
            for cell in run.extra("cells")
            if isinstance(cell, dict)
        ]
    tables = []
    for label, audit in audits:
        if not isinstance(audit, dict):
            continue
        caption = f"edit audit{label}: weights changed per module type, relative norm ‖W′ − W‖ / ‖W‖"
        if audit.get("untouched_targets"):
            caption += f"; {len(audit['untouched_targets'])} targeted weights left untouched"
        tables.append(_table(caption, summary_table(audit), ["module", "changed", "max", "mean"]))
    return tables


TABLES: dict[str, Callable[[Run], list[dict[str, Any]]]] = {
    "finetune": _finetune_tables,
    "ablate": _ablate_tables,
    "beb": _beb_tables,
    "analyze clusters": _cluster_tables,
    "surface": _surface_tables,
    "durability": _durability_tables,
}


def _images(run: Run) -> list[tuple[str, str]]:
    images = [(png.name, _data_uri(png.read_bytes())) for png in sorted(run.path.glob("*.png")) if png.is_file()]
    if images:
        return images
    rows = [row.model_dump() for row in run.result.results if row.harmful_rate is not None]
    return [("harmful rate per row", _data_uri(rate_bars(rows)))] if rows else []


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


RATE_KEYS = set(RATE_COLUMNS)


def rate_bars(rows: Sequence[dict[str, Any]]) -> bytes:
    """Harmful rate per row with its 95 % interval, labelled by the row's coordinates."""
    from disalign.core.plots import pyplot

    plt = pyplot()

    labels = [
        " ".join(f"{v:g}" if isinstance(v, float) else str(v) for k, v in row.items() if k not in RATE_KEYS)
        for row in rows
    ]
    rates = [row["harmful_rate"] for row in rows]
    bounds = [_bounds(row) for row in rows]
    below = [rate - low for rate, (low, _) in zip(rates, bounds, strict=True)]
    above = [high - rate for rate, (_, high) in zip(rates, bounds, strict=True)]
    figure, axes = plt.subplots(figsize=(max(4, 0.45 * len(rows) + 1.5), 3.2), constrained_layout=True)
    axes.bar(range(len(rows)), rates, yerr=[below, above], capsize=3, color="C3")
    axes.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize="small")
    axes.set(ylabel="harmful rate", ylim=(0, 1.02))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def _bounds(row: dict[str, Any]) -> tuple[float, float]:
    """The row's interval, or its rate twice where it has none (no error bar)."""
    ci, rate = row.get("ci") or (None, None), row["harmful_rate"]
    return (rate if ci[0] is None else ci[0]), (rate if ci[1] is None else ci[1])


DRILL_SKIP = {"key", "id", "judge", "source"}


def _records(run: Run, limit: int) -> tuple[list[dict[str, Any]], int]:
    path = run.path / RECORDS
    if not path.is_file():
        return [], 0
    kept, total = [], 0
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run
            total += 1
            if len(kept) < limit:
                kept.append({k: v for k, v in record.items() if k not in DRILL_SKIP and not isinstance(v, dict | list)})
    return kept, total


def section(run: Run, index: int, max_records: int) -> Section:
    judge, validation = validation_text(run)
    facts = [(f"model ({role})", f"{ref.name}  [{ref.key}]") for role, ref in run.models.items()]
    facts += [("judge", judge), ("judge validation", validation or "—"), ("directory", str(run.path))]
    rows = [row.model_dump() for row in run.result.results]
    tables = [*(TABLES.get(run.command, lambda _: [])(run))]
    if rows and not tables:
        tables.append(_table("results", rows))
    tables += edit_audit_tables(run)
    records, total = _records(run, max_records)
    return Section(
        anchor=f"run-{index}",
        title=run.title,
        facts=facts,
        tables=tables,
        images=_images(run),
        records=records,
        records_total=total,
        config=json.dumps(run.config, indent=2, default=str),
    )


# ---------------------------------------------------------------- the page


def report(
    run_dirs: Sequence[str | Path] | str | Path,
    out: str | Path = "report.html",
    pair: str | Sequence[str] | None = None,
    *,
    max_records: int = 20_000,
) -> Path:
    """Write one self-contained HTML page over `run_dirs`; return its path."""
    return write_report(run_dirs, out, pair, max_records=max_records)[2]


def demo_report(demo_dir: str | Path) -> Path:
    """The zoo's fragility report, beside a demo's summary: DEMO/report.html (a card per aligned model)."""
    return report([demo_dir], Path(demo_dir) / "report.html")


def write_report(
    run_dirs: Sequence[str | Path] | str | Path,
    out: str | Path,
    pair: str | Sequence[str] | None = None,
    *,
    max_records: int = 20_000,
) -> tuple[list[Run], list[Card], Path]:
    """The page, and what it shows: the runs read and the fragility cards."""
    if isinstance(run_dirs, str | Path):
        run_dirs = [run_dirs]
    runs = load_runs(run_dirs)
    pairs = choose_pairs(runs, pair)
    cards = [fragility_card(p, runs) for p in pairs]
    shown = runs if pair is None else [run for p in pairs for run in runs_of(p, runs)]
    if pair is not None:
        shown += [run for run in runs if not run.targets and not run.zoo_wide and run not in shown]
    sections = [section(run, index, max_records) for index, run in enumerate(shown)]
    page = render(cards, sections, left_out=len(runs) - len(shown))
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(out)
    except OSError as err:
        raise UserError(f"--out {out}: cannot be written ({err.strerror})") from None
    return runs, cards, out


def card_json(card: Card) -> dict[str, Any]:
    """A card as summary.json keeps it: the pair's names and every measure ("value": None = not measured)."""
    return {
        "base": card.pair.base.name if card.pair.base else None,
        "aligned": card.pair.aligned.name,
        "baseline": card.baseline,
        "measures": [asdict(measure) for measure in card.measures],
        "surface": card.surface,
    }


def render(cards: Sequence[Card], sections: Sequence[Section], left_out: int = 0) -> str:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("disalign.reporting", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["script_json"] = _script_json
    return environment.get_template("report.html.j2").render(cards=cards, sections=sections, left_out=left_out)


def _script_json(value: Any) -> str:
    """JSON safe inside <script type="application/json">: no `</script>` can close it early."""
    from markupsafe import Markup

    text = json.dumps(value, default=str, ensure_ascii=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
