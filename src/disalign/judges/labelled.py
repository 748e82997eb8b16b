"""The labelled refusal set shipped with the package, and how a judge is measured against it.

Each row of `validation/{train,dev,test}.jsonl` holds `prompt`, `response`, `refused`
(true/false), `family` (compliance, explicit, warning, redirection or evasion: how the response
declines, or that it complies) and `source`; `validation/LABELLING.md` says how each was labelled.
The development half is used to build and calibrate the refusal judge, and with the train split to
fit the stance judge's probe. The test half is scored only once a version of a judge is frozen,
and that score is the one to quote; each such scoring is listed in tests/test_refusal_judge.py and
tests/test_stance_judge.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from disalign.core.runs import json_object
from disalign.core.stats import agreement, rate_summary
from disalign.errors import UserError

FAMILIES = ("compliance", "explicit", "warning", "redirection", "evasion")
REFUSAL_FAMILIES = FAMILIES[1:]
SPLITS = ("train", "dev", "test")
_TEXT_FIELDS = ("prompt", "response", "source")


@dataclass(frozen=True)
class LabelledResponse:
    prompt: str
    response: str
    refused: bool
    family: str
    source: str


def split_path(split: str) -> Path:
    if split not in SPLITS:
        raise UserError(f"no labelled split '{split}'; known: {', '.join(SPLITS)}")
    return Path(str(resources.files("disalign.judges") / "validation" / f"{split}.jsonl"))


def load_split(split: str) -> list[LabelledResponse]:
    return load_labelled(split_path(split))


def load_labelled(path: str | Path) -> list[LabelledResponse]:
    """Rows of a labelled JSONL file; a row whose labels are not of the allowed values is named."""
    rows = []
    # Split on "\n" only: str.splitlines would also split inside strings holding U+2028 or U+0085.
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), start=1):
        if line.strip():
            rows.append(_row(line, f"{path} line {number}"))
    if not rows:
        raise UserError(f"{path}: no labelled rows")
    return rows


def _row(line: str, where: str) -> LabelledResponse:
    data = json_object(line, where)
    for field in _TEXT_FIELDS:
        if not isinstance(data.get(field), str):
            raise UserError(f"{where}: no text field '{field}'")
    refused, family = data.get("refused"), data.get("family")
    if not isinstance(refused, bool):
        raise UserError(f"{where}: refused must be true or false, got {refused!r}")
    if family not in FAMILIES:
        raise UserError(f"{where}: family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if refused != (family != "compliance"):
        raise UserError(f"{where}: family '{family}' contradicts refused={str(refused).lower()}")
    return LabelledResponse(data["prompt"], data["response"], refused, family, data["source"])


def measure(judge, rows: Sequence[LabelledResponse]) -> dict[str, Any]:
    """How often `judge` says `refused` as the labels do: accuracy with its Wilson interval, both
    error counts, Cohen's κ, and the accuracy within each labelled family and source."""
    verdicts = judge.judge([row.prompt for row in rows], [row.response for row in rows])
    predicted = [verdict.refused for verdict in verdicts]
    correct = [None if p is None else p == row.refused for p, row in zip(predicted, rows, strict=True)]
    accuracy = rate_summary(correct, key="accuracy")
    return {
        "n": len(rows),
        "accuracy": accuracy["accuracy"],
        "accuracy_ci": accuracy["ci"],
        "false_refusals": sum(p is True and not row.refused for p, row in zip(predicted, rows, strict=True)),
        "missed_refusals": sum(p is False and row.refused for p, row in zip(predicted, rows, strict=True)),
        "undecided": sum(p is None for p in predicted),
        "cohen_kappa": agreement(predicted, [row.refused for row in rows])["cohen_kappa"],
        "per_family": _accuracy_by(correct, [row.family for row in rows]),
        "per_source": _accuracy_by(correct, [row.source for row in rows]),
    }


def _accuracy_by(correct: list[bool | None], groups: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for group in sorted(set(groups)):
        decided = [c for c, g in zip(correct, groups, strict=True) if g == group and c is not None]
        out[group] = {"accuracy": sum(decided) / len(decided) if decided else None, "n": len(decided)}
    return out
