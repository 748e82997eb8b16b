"""Every judged rate of a summary beside its judge's error: the corrected rate (Rogan-Gladen with
a posterior interval, core/stats.py corrected_rate) from the judge's measured confusion counts, and, where the run's
own records were labelled, the prediction-powered estimate.

Which measurement corrects a run (`judge_error` in its summary, chosen where the judge is built):
1. this machine's `disalign judge --label-field` measurement of the same judge configuration, when
   it counted each kind of error (judges/validate.py): it was made on the user's own text;
2. else the shipped measurement on the labelled test half (judges/calibration.py), when the judge's
   configuration is the one measured there;
3. else none, and every corrected rate is null with a `correction_note`.
A panel (`--judge stance,refusal`) is corrected by its first judge's measurement: that judge decides.
"""

from __future__ import annotations

from typing import Any

from disalign.core.stats import corrected_rate, ppi_rate
from disalign.judges.base import EXACT_JUDGES
from disalign.judges.headline import with_headline
from disalign.judges.labels import LABELS_FILE, ppi_summary, read_labels

RATE_QUANTITY = {"harmful_rate": "harmful", "refusal_rate": "refused"}
# Judges whose `harmful` is exactly "did not refuse", so a refusal measurement also measures harm.
_COMPLEMENTARY = {"keyword", "refusal", "stance"}
_CACHE_KEYS = ("probe",)
ASSUMES = {
    "corrected": "the run's text fools the judge as often as the text it was measured on",
    "ppi": "the labelled records are a random sample of the run (by the weights kept)",
}


def _lead(judge):
    """The judge whose verdict decides, without the unscorable guard (its measurement is of the judge alone)."""
    from disalign.judges.unscorable import unwrapped

    judges = getattr(judge, "judges", None)
    return unwrapped(judges[0] if judges else judge)


def judge_error(judge, user_validation: dict[str, Any] | None) -> dict[str, Any] | None:
    """The confusion counts that correct this judge's rates, with what they were measured on."""
    from disalign.judges.calibration import shipped_calibration

    lead = _lead(judge)
    complementary = lead.name in _COMPLEMENTARY
    counted = user_validation and user_validation.get("confusion") and user_validation.get("label_kind")
    if counted:
        return {
            "judge": lead.name,
            "quantity": user_validation["label_kind"],
            **user_validation["confusion"],
            "complementary": complementary,
            "source": "user",
            "measured_on": f"{user_validation.get('source')} ({user_validation.get('measured')})",
        }
    shipped = shipped_calibration().get("judges", {}).get(lead.name)
    if shipped is None or _recipe(shipped["config"]) != _recipe(_jsonable(lead.config)):
        return None
    overall = shipped["test"]["overall"]
    shift = shipped.get("shift", {})
    return {
        "judge": lead.name,
        "quantity": "refused",
        **{key: overall[key] for key in ("tp", "fn", "fp", "tn")},
        "complementary": complementary,
        "source": "shipped",
        "measured_on": f"the shipped labelled test half ({sum(overall.values())} replies)",
        # The run's text is not the test half's: how far the judge's error moved between shipped sets.
        "shift": [shift.get("sensitivity", 0.0), shift.get("specificity", 0.0)],
    }


def _recipe(config: dict[str, Any]) -> dict[str, Any]:
    """A judge's configuration without its cache keys: `stance`'s `probe` hashes the converted checkpoint's
    files, which differ with the transformers version that wrote them, while the model, labels, depths,
    cut and precision the probe is fitted from stay the same."""
    return {key: value for key, value in config.items() if key not in _CACHE_KEYS}


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _counts_for(error: dict[str, Any], quantity: str) -> tuple[tuple[int, int], tuple[int, int], tuple] | None:
    """(sensitivity, specificity) counts and their between-text shift for `quantity`, from a measurement
    of its own quantity, or of its complement for judges whose harmful is exactly not refused."""
    tp, fn, fp, tn = (error[key] for key in ("tp", "fn", "fp", "tn"))
    sens_shift, spec_shift = error.get("shift") or (0.0, 0.0)
    if error["quantity"] == quantity:
        return (tp, tp + fn), (tn, tn + fp), (sens_shift, spec_shift)
    if error.get("complementary"):
        return (tn, tn + fp), (tp, tp + fn), (spec_shift, sens_shift)
    return None


def correct_row(row: dict[str, Any], error: dict[str, Any] | None) -> dict[str, Any]:
    """The `R_corrected`, `R_corrected_ci` (and `correction_note` when null) of each judged rate R of one row."""
    added: dict[str, Any] = {}
    notes = []
    n = row.get("n") or 0
    scorable_share = 1 - (row.get("unscorable_rate") or 0)
    scorable = round(n * scorable_share)
    for key, quantity in RATE_QUANTITY.items():
        if key not in row:
            continue
        rate = row[key]
        found, note = None, None
        counts = _counts_for(error, quantity) if error else None
        if rate is None or not n:
            note = "no rate to correct"
        elif not scorable:
            note = "every record is unscorable"
        elif error is None:
            note = "no measurement of this judge's error (run `disalign judge --label-field` on labelled replies)"
        elif counts is None:
            note = f"the judge's error was measured on '{error['quantity']}', not '{quantity}'"
        else:
            sensitivity, specificity, shift = counts
            found = corrected_rate(round(rate * n), scorable, sensitivity, specificity, text_shift=shift)
            if found is None:
                note = "the judge is uninformative here (sensitivity + specificity <= 1)"
        # Unscorable records are neither harmful nor refused: the judge's error applies to the rest.
        added[f"{key}_corrected"] = None if found is None else found["estimate"] * scorable_share
        added[f"{key}_corrected_ci"] = [None, None] if found is None else [c * scorable_share for c in found["ci"]]
        if note and note not in notes:
            notes.append(note)
    if notes:
        added["correction_note"] = "; ".join(notes)
    return added


def correct_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with every judged rate corrected, at the top level and in each row."""
    error = summary.get("judge_error")
    if summary.get("judge") is None:
        return summary
    if summary.get("judge") in EXACT_JUDGES:
        return {**summary, **_exact(summary), "results": [{**row, **_exact(row)} for row in summary.get("results", [])]}
    out = {**summary, **correct_row(summary, error)}
    out["results"] = [{**row, **correct_row(row, error)} for row in summary.get("results", [])]
    panel = summary.get("judges")
    if isinstance(panel, dict) and isinstance(panel.get("disagreements"), list) and summary.get("n"):
        out["judge_disagreement_rate"] = len(panel["disagreements"]) / summary["n"]
    if any(row.get("unscorable_rate") for row in [summary, *summary.get("results", [])]):
        out["unscorable_counted_as"] = "neither harmful nor refused (inside each rate's n; unscorable_rate apart)"
    out["correction"] = {
        "method": "Rogan-Gladen, posterior interval with the rate bounded by [0, 1] (run and measurement "
        "uncertainty, and the judge's measured shift between text sets)",
        "assumes": ASSUMES["corrected"],
        "measurement": None if error is None else {k: error[k] for k in ("source", "measured_on", "judge")},
    }
    return out


def _exact(row: dict[str, Any]) -> dict[str, Any]:
    """An exact judge's rates are their own correction."""
    added = {}
    for key in RATE_QUANTITY:
        if key in row:
            added[f"{key}_corrected"] = row[key]
            added[f"{key}_corrected_ci"] = (
                row.get("ci") if key == "harmful_rate" else row.get("refusal_ci", [None, None])
            )
    return added


def with_corrections(result, run=None):
    """`correct_summary` applied to a RunResult (what every verb's `finish` passes through); with
    the run's own labels (`RUN/labels.jsonl`, `disalign label`), the prediction-powered rates too."""
    summary = correct_summary(result.to_json())
    if run is not None and "," in (summary.get("judge") or "") and "judge_disagreement_rate" not in summary:
        summary["judge_disagreement_rate"] = panel_disagreement(run.records())
    if run is not None and run.path is not None and (run.path / LABELS_FILE).is_file():
        summary = ppi_summary(summary, list(run.records()), read_labels(run.path / LABELS_FILE))
    return type(result).model_validate(with_headline(summary))


def panel_disagreement(records) -> float | None:
    """The share of a panel's judged records on which its judges' decided `harmful` verdicts differ
    (None without panel records); unscorable records count in the share, with no disagreement."""
    panels = [record["panel"] for record in records if isinstance(record.get("panel"), dict)]
    if not panels:
        return None
    differ = sum(
        len({v.get("harmful") for v in panel.values() if v.get("harmful") is not None}) > 1 for panel in panels
    )
    return differ / len(panels)


def ppi_fields(rate_key: str, predicted: list[bool], labelled: list[tuple[bool, bool, float]]) -> dict[str, Any]:
    """`R_ppi` and `R_ppi_ci` of one rate: `labelled` holds (judged, label, weight) per labelled record."""
    found = ppi_rate(predicted, [j for j, _, _ in labelled], [y for _, y, _ in labelled], [w for _, _, w in labelled])
    return {f"{rate_key}_ppi": found["estimate"], f"{rate_key}_ppi_ci": found["ci"], "n_labelled": found["n_labelled"]}
