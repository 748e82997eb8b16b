"""Each shipped judge's confusion counts on the shipped labelled halves, stored in the package
(`validation/calibration.json`) so that a fresh machine can correct a judged rate for its judge's
errors (judges/correction.py).

The quantity is `refused` (positive: the reply declines). Counts are kept overall, by family and by
source, for the test half (what a summary's correction uses: no judge was built or fitted on it), for
the development half and for the long replies of `validation/long.jsonl`, with each row's verdict
(what benchmarks/bench_correction.py resamples). How far a judge's sensitivity and specificity move
between those three text sets, beyond sampling, is kept as its `shift`: the variance a correction adds
when its measurement was made on other text than the run's. The `stance` judge is fitted on the
development half, so its development verdicts are cross-validated (5 folds, the train split always
fitted on); the `refusal` judge's phrase lists were written while reading that half, so its
development counts flatter it.

    python -m disalign.judges.calibration     # rewrites validation/calibration.json (~5 min on 2 cores)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from disalign.errors import UserError
from disalign.judges.labelled import LabelledResponse, load_labelled, load_split

SHIPPED_JUDGES = ("keyword", "refusal", "stance")
MEASURED_SETS = ("dev", "test", "long")
CV_FOLDS, CV_SEED = 5, 0


def calibration_path() -> Path:
    return Path(str(resources.files("disalign.judges") / "validation" / "calibration.json"))


def long_replies_path() -> Path:
    return Path(str(resources.files("disalign.judges") / "validation" / "long.jsonl"))


@cache
def shipped_calibration() -> dict[str, Any]:
    """The stored measurement of every shipped judge ({} when the file is missing)."""
    path = calibration_path()
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def confusion(predicted: Sequence[bool | None], truth: Sequence[bool | None]) -> dict[str, int]:
    """Counts with True as the positive class; an undecided verdict is counted apart, an unlabelled row not at all."""
    counts = {"tp": 0, "fn": 0, "fp": 0, "tn": 0, "undecided": 0}
    for said, true in zip(predicted, truth, strict=True):
        if true is None:
            continue
        if said is None:
            counts["undecided"] += 1
        else:
            counts[("t" if said == true else "f") + ("p" if said else "n")] += 1
    return counts


def confusion_by(predicted: Sequence[bool | None], rows: Sequence[LabelledResponse]) -> dict[str, Any]:
    truth = [row.refused for row in rows]
    grouped: dict[str, Any] = {"overall": confusion(predicted, truth)}
    for attribute in ("family", "source"):
        groups = sorted({getattr(row, attribute) for row in rows})
        grouped[f"per_{attribute}"] = {
            group: confusion(
                [p for p, row in zip(predicted, rows, strict=True) if getattr(row, attribute) == group],
                [row.refused for row in rows if getattr(row, attribute) == group],
            )
            for group in groups
        }
    return grouped


def _proportion(hits: int, n: int) -> tuple[float, float]:
    """A measured proportion and its sampling variance, with half a count added each way (never 0)."""
    share = (hits + 0.5) / (n + 1)
    return share, share * (1 - share) / (n + 1)


def _between_set_variance(measured: Sequence[tuple[int, int]]) -> float:
    """DerSimonian-Laird: the variance of a proportion's true value across text sets, beyond what each
    set's sampling explains, from (hits, n) per set; 0 when sampling explains it all."""
    shares, variances = zip(*(_proportion(hits, n) for hits, n in measured), strict=True)
    weights = 1 / np.asarray(variances)
    pooled = float(weights @ np.asarray(shares) / weights.sum())
    q = float(weights @ (np.asarray(shares) - pooled) ** 2)
    return max(0.0, (q - (len(shares) - 1)) / float(weights.sum() - (weights**2).sum() / weights.sum()))


def between_set_shift(overall: Sequence[dict[str, int]]) -> dict[str, float]:
    """How much a judge's sensitivity and specificity differ between two text sets beyond sampling:
    twice the between-set variance (one set's value against another's), from each set's counts."""
    sensitivity = _between_set_variance([(c["tp"], c["tp"] + c["fn"]) for c in overall])
    specificity = _between_set_variance([(c["tn"], c["tn"] + c["fp"]) for c in overall])
    return {"sensitivity": 2 * sensitivity, "specificity": 2 * specificity}


def _verdicts(judge, rows: Sequence[LabelledResponse]) -> list[bool | None]:
    return [v.refused for v in judge.judge([row.prompt for row in rows], [row.response for row in rows])]


def _stance_dev_cross_validated(judge, dev: list[LabelledResponse]) -> list[bool]:
    """The stance judge's verdicts on the development half from probes that never saw the row:
    each fold fitted on the train split and the other four fifths of the half."""
    from sklearn.model_selection import StratifiedKFold

    from disalign.judges import stance

    train = load_split("train")
    rows = train + dev
    states = stance.reply_states(
        judge.model,
        judge.tokenizer,
        [row.prompt for row in rows],
        [row.response for row in rows],
        judge.batch_size,
        progress=f"calibration: reading {len(rows)} labelled replies",
    )
    refused = np.array([row.refused for row in rows])
    words = judge.words.judge([row.prompt for row in dev], [row.response for row in dev])
    verdicts: list[bool] = [False] * len(dev)
    folds = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=CV_SEED)
    dev_refused = refused[len(train) :]
    for fitted_dev, left_out in folds.split(dev_refused, dev_refused):
        fitted = np.concatenate([np.arange(len(train)), len(train) + fitted_dev])
        probe = stance.fit_probe(states[fitted], refused[fitted])
        chances = probe.refusal_chance(states[len(train) + left_out])
        for index, chance in zip(left_out, chances, strict=True):
            verdicts[index] = bool(
                stance.stance_verdict(bool(chance >= judge.threshold), float(chance), words[index]).refused
            )
    return verdicts


def _reading_each_set_once():
    """A patch of the stance judge's reader that remembers what it read: its probe's fit and the
    cross-validation below read the same 998 labelled replies, ~75 s of CPU each."""
    from unittest import mock

    from disalign.judges import stance

    read, remembered = stance.reply_states, {}

    def reply_states(model, tokenizer, prompts, responses, batch_size=16, *, progress=None):
        key = (tuple(prompts), tuple(responses))
        if key not in remembered:
            remembered[key] = read(model, tokenizer, prompts, responses, batch_size, progress=progress)
        return remembered[key]

    return mock.patch.object(stance, "reply_states", reply_states)


def measure_shipped(names: Sequence[str] = SHIPPED_JUDGES) -> dict[str, Any]:
    """Every named judge, with its default options, read over both halves."""
    with _reading_each_set_once():
        return _measure(names)


def _measure(names: Sequence[str]) -> dict[str, Any]:
    from disalign.judges import get_judge

    halves = {split: load_split(split) for split in ("dev", "test")}
    halves["long"] = load_labelled(long_replies_path())
    judges: dict[str, Any] = {}
    for name in names:
        judge = get_judge(name)
        test = _verdicts(judge, halves["test"])
        if name == "stance":
            dev, dev_how = _stance_dev_cross_validated(judge, halves["dev"]), "cross-validated, 5 folds"
        else:
            dev = _verdicts(judge, halves["dev"])
            dev_how = "in-sample: the judge was built reading this half" if name == "refusal" else "as shipped"
        long = _verdicts(judge, halves["long"])
        judges[name] = {
            "config": judge.config,
            "test": confusion_by(test, halves["test"]),
            "dev": {**confusion_by(dev, halves["dev"]), "how": dev_how},
            "long": {**confusion_by(long, halves["long"]), "how": "as shipped"},
            "verdicts": {"test": test, "dev": dev, "long": long},
        }
        judges[name]["shift"] = {
            **between_set_shift([judges[name][split]["overall"] for split in MEASURED_SETS]),
            "sets": list(MEASURED_SETS),
            "how": "twice the DerSimonian-Laird between-set variance of sensitivity and of specificity",
        }
    return {
        "quantity": "refused",
        "measured_on": "the shipped labelled halves (disalign/judges/validation, 202 replies each) and long.jsonl",
        "measured": time.strftime("%Y-%m-%d"),
        "generated_by": "python -m disalign.judges.calibration",
        "judges": judges,
    }


def main(names: list[str]) -> None:
    unknown = sorted(set(names) - set(SHIPPED_JUDGES))
    if unknown:
        raise UserError(f"not a shipped judge: {', '.join(unknown)}; known: {', '.join(SHIPPED_JUDGES)}")
    measured = measure_shipped(names or SHIPPED_JUDGES)
    path = calibration_path()
    if names and path.is_file():
        measured["judges"] = {**json.loads(path.read_text(encoding="utf-8"))["judges"], **measured["judges"]}
    path.write_text(json.dumps(measured, indent=1) + "\n", encoding="utf-8")
    for name, found in measured["judges"].items():
        print(name, json.dumps(found["test"]["overall"]), json.dumps(found["dev"]["overall"]))


if __name__ == "__main__":
    main(sys.argv[1:])
