"""`disalign judge`: judge existing responses, and measure a judge against human labels.

A measurement is remembered on this machine (under the cache root), keyed by the judge's
configuration, so that every later summary made with the same judge says how far it can be
trusted (`judge_validation`); the exact world judge is right by construction.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from disalign.core.degeneration import unscorable_rate
from disalign.core.runs import read_json, write_json_atomic
from disalign.core.stats import agreement, rate_summary
from disalign.errors import UserError
from disalign.judges.base import EXACT_JUDGES
from disalign.judges.calibration import confusion
from disalign.judges.compare import compare_records
from disalign.judges.correction import judge_error
from disalign.judges.labels import read_label
from disalign.paths import cache_root

LABEL_KINDS = ("harmful", "refused")
_CHUNK = 64


def _validations_path() -> Path:
    return cache_root() / "judges" / "validations.json"


def _judge_key(judge) -> str:
    return json.dumps({"name": judge.name, **judge.config}, sort_keys=True, default=str)


def known_validation(judge) -> dict[str, Any] | None:
    """How far this judge is known to be right: exact judges by construction, others from the
    last labelled `disalign judge` run with the same configuration on this machine; None if unknown."""
    if judge.name in EXACT_JUDGES:
        return {"accuracy": 1.0, "source": EXACT_JUDGES[judge.name]}
    path = _validations_path()
    return read_json(path).get(_judge_key(judge)) if path.is_file() else None


def remember_validation(judge, validation: dict[str, Any], source: str, data_fingerprint: str) -> None:
    """Store a measurement with what it was measured on: the labelled file, its content hash,
    its size and the date. Only judges of the same configuration ever read it back."""
    path = _validations_path()
    known = read_json(path) if path.is_file() else {}
    known[_judge_key(judge)] = {
        **validation,
        "source": source,
        "data_fingerprint": data_fingerprint,
        "measured": time.strftime("%Y-%m-%d"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, known)


def judge_fields(judge) -> dict[str, Any]:
    """The keys every summary carries about its judge: its name, how far it is known to be right,
    and the error counts that correct its rates (judges/correction.py)."""
    validation = known_validation(judge)
    return {"judge": judge.name, "judge_validation": validation, "judge_error": judge_error(judge, validation)}


def parse_label(value: Any, where: str) -> bool | None:
    """A row's label; an empty cell leaves the row unlabelled (None)."""
    return None if value is None or value == "" else read_label(value, where)


def check_labelled_rows(rows: list[tuple[str, dict[str, Any]]], label_field: str | None) -> None:
    """Every row has text to judge and, when labels are asked for, a valid label: checked before
    anything is judged."""
    if not rows:
        raise UserError("no rows to judge")
    for where, row in rows:
        for field in ("prompt", "response"):
            if not isinstance(row.get(field), str):
                raise UserError(f"{where}: no text field '{field}'")
        if label_field is not None:
            if label_field not in row:
                raise UserError(f"{where}: no label field '{label_field}'")
            parse_label(row[label_field], where)


def judge_rows(
    rows: list[tuple[str, dict[str, Any]]], judge, run, *, label_field: str | None = None, label_kind: str = "harmful"
) -> dict[str, Any]:
    """Judge every row in input order, appending records chunk by chunk; returns the rates and,
    with labels, the judge's agreement with them. A record keeps the row under `input`, so a
    label column named like a verdict field (`harmful`) is never overwritten by the verdict."""
    if label_kind not in LABEL_KINDS:
        raise UserError(f"label_kind must be one of {', '.join(LABEL_KINDS)}, got {label_kind!r}")
    check_labelled_rows(rows, label_field)
    todo = [i for i in range(len(rows)) if not run.is_done(str(i))]
    for start in range(0, len(todo), _CHUNK):
        chunk = todo[start : start + _CHUNK]
        verdicts = judge.judge([rows[i][1]["prompt"] for i in chunk], [rows[i][1]["response"] for i in chunk])
        run.append(
            {"key": str(i), "input": rows[i][1], **v.as_dict(), "judge": judge.name}
            for i, v in zip(chunk, verdicts, strict=True)
        )
    records = sorted(run.records(), key=lambda r: int(r["key"]))
    summary: dict[str, Any] = {
        **rate_summary([r["harmful"] for r in records]),
        "refusal_rate": rate_summary([r["refused"] for r in records], key="refusal_rate")["refusal_rate"],
        "unscorable_rate": unscorable_rate(records),
    }
    labels = None
    if label_field is not None:
        labels = [parse_label(r["input"][label_field], f"row {r['key']}") for r in records]
        judged = [r[label_kind] for r in records]
        counts = confusion(judged, labels)
        summary["validation"] = {
            "label_field": label_field,
            "label_kind": label_kind,
            **agreement(judged, labels),
            "confusion": {key: counts[key] for key in ("tp", "fn", "fp", "tn")},
        }
    if records and "panel" in records[0]:
        summary["judges"] = _panel_summary(records, label_kind if labels is not None else "harmful", labels)
    return summary


def _panel_summary(records: list[dict[str, Any]], field: str, labels: list[bool | None] | None) -> dict[str, Any]:
    """Several judges side by side (`compare_records`) and, with labels, each one's agreement with them."""
    comparison = compare_records(records, field=field)
    if labels is not None:
        comparison["validation"] = {
            name: agreement([record["panel"][name][field] for record in records], labels)
            for name in comparison["judges"]
        }
    return comparison
