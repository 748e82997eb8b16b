"""The refusal judge's relevance thresholds, calibrated on the development half, and how well that
calibration holds on replies it was not made on.

Each reply of the half is read once (judges/refusal.py) and those left to relevance are scored
once by the measure. The thresholds are the point of a grid (0, 0.05, ..., 0.95 for each of
plain, cued and attempt) whose accuracy on the half, averaged with its grid neighbours', is
highest, so that a plateau beats a lone lucky point. Cross-validation inside the half (stratified
5-fold, repeated 10 times: thresholds chosen on four fifths, accuracy on the fifth left out)
estimates the accuracy of that choice on other replies; the estimate still flatters the judge as
far as its phrase lists were written while reading the same half.

    python -m disalign.judges.calibrate [lexical] [embedding]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter
from sklearn.model_selection import RepeatedStratifiedKFold

from disalign.errors import UserError
from disalign.judges.labelled import LabelledResponse, load_split
from disalign.judges.refusal import MEASURES, Remaining, Thresholds, read

GRID = np.round(np.arange(0.0, 1.0, 0.05), 2)
FOLDS, REPEATS, SEED = 5, 10, 0


def calibrate(measure: str, rows: Sequence[LabelledResponse] | None = None) -> dict[str, Any]:
    """The best thresholds for `measure` on `rows` (the development half by default), their
    accuracy there, and the cross-validated accuracy of choosing them so."""
    if measure not in MEASURES:
        raise UserError(f"no relevance measure '{measure}'; known: {', '.join(MEASURES)}")
    rows = list(rows) if rows is not None else load_split("dev")
    refused = np.array([row.refused for row in rows])
    correct = _correct_on_grid([read(row.prompt, row.response) for row in rows], measure) == refused
    everyone = np.arange(len(rows))
    best = _best(correct, everyone)
    splits = RepeatedStratifiedKFold(n_splits=FOLDS, n_repeats=REPEATS, random_state=SEED).split(refused, refused)
    held_out = [correct[_best(correct, chosen_on)][left_out].mean() for chosen_on, left_out in splits]
    return {
        "measure": measure,
        "n": len(rows),
        "thresholds": Thresholds(*(float(GRID[i]) for i in best)),
        "accuracy": float(correct[best].mean()),
        "cv_accuracy": float(np.mean(held_out)),
        "cv_folds": f"{FOLDS}-fold x {REPEATS}",
    }


def _correct_on_grid(readings: list, measure: str) -> np.ndarray:
    """Whether each reply is judged refused, for every grid point: shape (plain, cued, attempt, reply)."""
    size = len(GRID)
    refused = np.empty((size, size, size, len(readings)), dtype=bool)
    remaining = [index for index, reading in enumerate(readings) if isinstance(reading, Remaining)]
    scores = dict(zip(remaining, MEASURES[measure]().scores([readings[i] for i in remaining]), strict=True))
    for index, reading in enumerate(readings):
        if not isinstance(reading, Remaining):
            refused[..., index] = reading.refused
        elif reading.attempt == "artefact":
            refused[..., index] = False
        else:
            below = scores[index] < GRID  # refused at each value of the threshold that applies
            axis = 2 if reading.attempt else 1 if reading.cued else 0
            refused[..., index] = below.reshape([size if a == axis else 1 for a in range(3)])
    return refused


def _best(correct: np.ndarray, rows: np.ndarray) -> tuple[int, int, int]:
    smoothed = uniform_filter(correct[..., rows].mean(-1), size=3, mode="nearest")
    return tuple(int(i) for i in np.unravel_index(np.argmax(smoothed), smoothed.shape))


def main(measures: list[str]) -> None:
    for measure in measures or ["lexical"]:
        found = calibrate(measure)
        print(json.dumps({**found, "thresholds": found["thresholds"]._asdict()}))


if __name__ == "__main__":
    main(sys.argv[1:])
