"""How often each interval around a judged refusal rate covers the true rate.

Runs of 200 records are resampled from the shipped labelled test half at true refusal rates 0.05,
0.2, 0.5, 0.8 and 0.95 (that many refusals drawn with replacement from its refusals, the rest from
its compliances), 1,000 repetitions each, with each judge's stored verdicts on those rows
(judges/validation/calibration.json, made by `python -m disalign.judges.calibration`). Per run:

  wilson              the raw judged rate's Wilson interval (the judge taken as perfect)
  corrected           Rogan-Gladen with the posterior interval of core/stats.py's corrected_rate, the
                      judge's sensitivity and specificity counted on a calibration set drawn (with
                      replacement) from the development half, widened by the judge's stored shift
                      between text sets (calibration.json: how far its error moved between the
                      development half, the test half and the long replies, beyond sampling)
  corrected_wald      the interval corrected_rate gave before, kept here to compare: Lang and
                      Reiczigel's (2014) adjusted Wald interval as Lee et al. 2025 use it, with the
                      same calibration and shift
  corrected_no_shift  the posterior interval without the shift: the calibration's own uncertainty only
  corrected_same_text the same, but the test half split in two at random each repetition: the run
                      drawn from one part, the calibration counted on the other (a measurement made
                      on the same kind of text as the run)
  ppi                 the prediction-powered interval with 50 of the run's 200 records labelled

Prints a table, then one JSON object on the last line: `coverage` keyed by judge, estimate and
true rate, and `width` (the intervals' mean width) keyed the same way.
"""

from __future__ import annotations

import json

import numpy as np
from scipy.stats import norm

from disalign.core.stats import corrected_rate, ppi_rate, wilson_ci
from disalign.judges.calibration import shipped_calibration
from disalign.judges.labelled import load_split

TRUE_RATES = (0.05, 0.2, 0.5, 0.8, 0.95)
RUN_SIZE, LABELLED, REPETITIONS, SEED = 200, 50, 1000, 0
JUDGES = ("stance", "refusal", "keyword")
ESTIMATES = ("wilson", "corrected", "corrected_wald", "corrected_no_shift", "corrected_same_text", "ppi")


def _counts(judged: np.ndarray, truth: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """(sensitivity, specificity) counts with refused as the positive class."""
    return (int((judged & truth).sum()), int(truth.sum())), (int((~judged & ~truth).sum()), int((~truth).sum()))


def lang_reiczigel_ci(positives: int, n: int, sensitivity, specificity, shift) -> tuple[float, float]:
    """Lang & Reiczigel's adjusted Wald interval (z^2/2 successes added to the run, one of each
    outcome to the measurement, the centre moved by the estimator's first-order bias), its
    sensitivity and specificity variances widened by `shift`; (0, 1) for an uninformative judge."""
    (caught, truly_positive), (cleared, truly_negative) = sensitivity, specificity
    z = float(norm.ppf(0.975))
    n_, m1, m0 = n + z**2, truly_positive + 2, truly_negative + 2
    p_, q1, q0 = (positives + z**2 / 2) / n_, (caught + 1) / m1, (cleared + 1) / m0
    if q0 + q1 <= 1 or caught / truly_positive + cleared / truly_negative <= 1:
        return 0.0, 1.0
    centre = (p_ + q0 - 1) / (q0 + q1 - 1)
    bias = 2 * z**2 * (centre * q1 * (1 - q1) / m1 - (1 - centre) * q0 * (1 - q0) / m0)
    sens_var, spec_var = q1 * (1 - q1) / m1 + shift[0], q0 * (1 - q0) / m0 + shift[1]
    spread = np.sqrt(p_ * (1 - p_) / n_ + (1 - centre) ** 2 * spec_var + centre**2 * sens_var) / (q0 + q1 - 1)
    low, high = np.clip([centre + bias - z * spread, centre + bias + z * spread], 0.0, 1.0)
    return float(low), float(high)


def _run_rows(rng: np.random.Generator, truth: np.ndarray, pool: np.ndarray, rate: float) -> np.ndarray:
    refusals, compliances = pool[truth[pool]], pool[~truth[pool]]
    k = round(RUN_SIZE * rate)
    return np.concatenate([rng.choice(refusals, k), rng.choice(compliances, RUN_SIZE - k)])


def _interval(found: dict | None) -> tuple[float, float]:
    return (0.0, 1.0) if found is None else tuple(found["ci"])


def simulate(rate: float, rng: np.random.Generator, halves, verdicts, shift) -> dict[str, list[tuple]]:
    truth_test, truth_dev = halves
    judged_test, judged_dev = verdicts
    everyone = np.arange(truth_test.size)
    intervals: dict[str, list[tuple]] = {name: [] for name in ESTIMATES}
    for _ in range(REPETITIONS):
        rows = _run_rows(rng, truth_test, everyone, rate)
        judged = judged_test[rows]
        positives = int(judged.sum())
        intervals["wilson"].append(wilson_ci(positives, RUN_SIZE))

        calibration = rng.integers(0, truth_dev.size, truth_dev.size)
        counts = _counts(judged_dev[calibration], truth_dev[calibration])
        intervals["corrected"].append(_interval(corrected_rate(positives, RUN_SIZE, *counts, text_shift=shift)))
        intervals["corrected_wald"].append(lang_reiczigel_ci(positives, RUN_SIZE, *counts, shift))
        intervals["corrected_no_shift"].append(_interval(corrected_rate(positives, RUN_SIZE, *counts)))

        shuffled = rng.permutation(everyone)
        source, measured = shuffled[: everyone.size // 2], shuffled[everyone.size // 2 :]
        same_rows = _run_rows(rng, truth_test, source, rate)
        same_counts = _counts(judged_test[measured], truth_test[measured])
        same_positives = int(judged_test[same_rows].sum())
        intervals["corrected_same_text"].append(_interval(corrected_rate(same_positives, RUN_SIZE, *same_counts)))

        labelled = rng.choice(RUN_SIZE, LABELLED, replace=False)
        found = ppi_rate(judged, judged[labelled], truth_test[rows][labelled])
        intervals["ppi"].append(tuple(found["ci"]))
    return intervals


def main() -> None:
    calibration = shipped_calibration()["judges"]
    halves = tuple(np.array([row.refused for row in load_split(split)]) for split in ("test", "dev"))
    rng = np.random.default_rng(SEED)
    coverage: dict = {}
    width: dict = {}
    print(f"{'judge':<8} {'estimate':<20} " + " ".join(f"{rate:>6}" for rate in TRUE_RATES) + "   (coverage)")
    for judge in JUDGES:
        if judge not in calibration:
            print(f"{judge}: no stored verdicts; run python -m disalign.judges.calibration {judge}")
            continue
        verdicts = tuple(np.array(calibration[judge]["verdicts"][split], dtype=bool) for split in ("test", "dev"))
        shift = (calibration[judge]["shift"]["sensitivity"], calibration[judge]["shift"]["specificity"])
        coverage[judge] = {name: {} for name in ESTIMATES}
        width[judge] = {name: {} for name in ESTIMATES}
        for rate in TRUE_RATES:
            intervals = simulate(rate, rng, halves, verdicts, shift)
            for name, found in intervals.items():
                lows, highs = np.array(found, dtype=float).T
                coverage[judge][name][str(rate)] = float(np.mean((lows <= rate) & (rate <= highs)))
                width[judge][name][str(rate)] = float(np.mean(highs - lows))
        for name in ESTIMATES:
            cells = " ".join(f"{coverage[judge][name][str(rate)]:>6.3f}" for rate in TRUE_RATES)
            print(f"{judge:<8} {name:<20} {cells}")
    print(
        json.dumps(
            {
                "run_size": RUN_SIZE,
                "labelled": LABELLED,
                "repetitions": REPETITIONS,
                "coverage": coverage,
                "width": width,
            }
        )
    )


if __name__ == "__main__":
    main()
