"""Measurements turned into what a run's summary holds: rows of the behaviour curve, the many-shot
table and fit, the component estimates, each with its interval, and the predicted beside the
observed flips."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from disalign.analyses.beb.estimators import (
    BoundSettings,
    Estimate,
    bootstrap,
    estimate,
    fit_power_law,
    kl_line,
    observed_flip,
)
from disalign.analyses.beb.measure import BehaviourCurve, ComponentCurves
from disalign.core.stats import bootstrap_ci, rate_summary
from disalign.errors import UserError

ESTIMATE_KEYS = ("beta", "beta_prime", "sigma", "log_inv_alpha", "predicted_flip")
BOUND_KEYS = {"thm_3_1": "bound_thm_3_1", "thm_3_2": "bound_thm_3_2", "thm_b_1": "bound_thm_b_1"}


def _decided(column: np.ndarray) -> list[bool | None]:
    return [None if np.isnan(v) else bool(v) for v in column]


def curve_rows(curve: BehaviourCurve, *, aligning: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """One row per k: mean behaviour in [−1, 1] with its interval, harmful and refusal rates."""
    rows = []
    for j, k in enumerate(curve.ks):
        scores = curve.behaviour[:, j]
        scores = scores[~np.isnan(scores)]
        harmful = rate_summary(_decided(curve.harmful[:, j]))
        refused = rate_summary(_decided(curve.refused[:, j]), key="refusal_rate")
        rows.append(
            {
                "k": int(k),
                "aligning": aligning,
                "behavior": float(scores.mean()) if scores.size else None,
                "behavior_ci": list(bootstrap_ci(scores, seed=seed)) if scores.size else [None, None],
                "harmful_rate": harmful["harmful_rate"],
                "ci": harmful["ci"],
                "refusal_rate": refused["refusal_rate"],
                "refusal_ci": refused["ci"],
                "n": harmful["n"],
            }
        )
    return rows


def harm_rise(curve: BehaviourCurve) -> dict[str, Any]:
    """Is the harmful rate after the most harmful sentences higher than after none? Every request
    is asked at every k, so the test is paired: an exact one-sided sign test on the requests whose
    verdict changed between the first and the last k."""
    from scipy.stats import binomtest

    first, last = curve.harmful[:, 0], curve.harmful[:, -1]
    decided = ~np.isnan(first) & ~np.isnan(last)
    gained = int(((last == 1) & (first == 0) & decided).sum())
    lost = int(((last == 0) & (first == 1) & decided).sum())
    p_value = binomtest(gained, gained + lost, 0.5, alternative="greater").pvalue if gained + lost else 1.0
    return {"from_k": int(curve.ks[0]), "to_k": int(curve.ks[-1]), "gained": gained, "lost": lost, "p_value": p_value}


def flip_summary(curve: BehaviourCurve, *, seed: int = 0) -> dict[str, Any]:
    flip = observed_flip(curve.ks, curve.behaviour, seed=seed)
    return {**flip.as_dict(), "searched_up_to": int(curve.ks[-1])}


def manyshot_summary(ks: list[int], nll: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """Mean NLL of the harmful answer per number of shots and the mean probability of that answer
    (in the world, where a judge calls exactly that answer harmful, the expected harmful rate
    without sampling noise), with intervals; the power-law fit over n ≥ 1."""
    table = [
        {
            "shots": int(k),
            "nll": float(nll[:, j].mean()),
            "nll_ci": list(bootstrap_ci(nll[:, j], seed=seed)),
            "answer_probability": float(np.exp(-nll[:, j]).mean()),
            "answer_probability_ci": list(bootstrap_ci(np.exp(-nll[:, j]), seed=seed)),
        }
        for j, k in enumerate(ks)
    ]
    summary: dict[str, Any] = {"nll": table}
    try:
        fit = fit_power_law(ks, nll, seed=seed)
    except UserError as err:
        summary["fit"] = {"error": str(err)}
    else:
        summary["fit"] = {
            name: value.as_dict() if isinstance(value, Estimate) else value for name, value in fit.items()
        }
    return summary


def estimate_summary(
    curves: ComponentCurves, bounds: BoundSettings, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    estimates = estimate(
        curves.lengths,
        curves.step_log_ratio,
        curves.cumulative_log_ratio,
        curves.model_kl,
        bounds,
        n_boot=n_boot,
        seed=seed,
    )
    return {
        **{name: value.as_dict() for name, value in estimates.items()},
        "bound_settings": {"epsilon": bounds.epsilon, "delta": bounds.delta, "aligning": bounds.aligning},
        "curves": curves.as_dict(),
    }


def exact_kl_line(ks: list[int], nll: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Where P₋ is exact and deterministic (the world), KL(P₋ ‖ P_LLM(·|s)) over the answer is its
    NLL: the many-shot curve read as the KL curve of §4.3 step 6 (intervals over items)."""
    grid = np.asarray(ks)
    point, low, high = bootstrap(
        lambda rows: np.array(kl_line(nll[rows], grid)), nll.shape[0], n_boot=n_boot, seed=seed
    )
    return {
        name: Estimate(float(point[i]), (float(low[i]), float(high[i]))).as_dict()
        for i, name in enumerate(("log_inv_alpha", "predicted_flip"))
    }


def estimate_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary keys of `beb estimate` and `beb bounds` from `estimate_summary`'s value."""
    return {
        **{key: summary[key] for key in ESTIMATE_KEYS},
        "bounds": {name: summary[key] for name, key in BOUND_KEYS.items()},
        "bound_settings": summary["bound_settings"],
        "proxy_accuracy": summary["proxy_accuracy"],
        "curves": summary["curves"],
    }


def context_fields(setting) -> dict[str, Any]:
    """Where the model's context ends, and (the world) where its training context ended."""
    fields: dict[str, Any] = {"context": setting.context}
    if setting.trained_context is not None:
        fields["trained_context"] = setting.trained_context
    if setting.exact:
        fields["exact"] = {k: (v if math.isfinite(v) else None) for k, v in setting.exact.items()}
        fields["exact_infinite"] = [k for k, v in setting.exact.items() if not math.isfinite(v)]
    return fields


def flip_comparison(estimates: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """Predicted (log(1/α)/β, and Theorem 3.2 against the aligning prompt) beside the observed flips."""

    def pair(predicted, observed) -> dict[str, Any]:
        ratio = predicted / observed if predicted is not None and observed else None
        return {"predicted": predicted, "observed": observed, "ratio": ratio}

    comparison = {"flip": pair(estimates["predicted_flip"]["value"], fields["observed_flip"]["value"])}
    if "observed_flip_aligning" in fields:
        comparison["aligning_bound"] = pair(
            estimates["bound_thm_3_2"]["value"], fields["observed_flip_aligning"]["value"]
        )
    return comparison
