"""Labels from the user's own run (`RUN/labels.jsonl`) and the prediction-powered rates they give.

A person labels a sample of the run's scorable records for the quantity its judge decides
(`refused` for the refusal judges, `harmful` for the others). The sample is stratified by the
judge's verdict and, for a panel, by whether its judges disagree, so that the rare strata get
read; each labelled row keeps its sampling weight (records of its stratum / labelled records of
its stratum), which keeps the estimate unbiased. With labels, every judged rate R of the summary
gains `R_ppi` and `R_ppi_ci` (Angelopoulos et al. 2023): the judge's rate over all records
corrected by the labels' weighted mean disagreement with it, an estimate that needs no assumption
that this run's text fools the judge as the shipped labelled set did.

Each row of labels.jsonl: {"key": record key, "label": true/false, "weight": float,
"quantity": "refused" | "harmful", "stratum": "..."}.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from disalign.core.runs import json_object, read_json, read_records, write_json_atomic
from disalign.errors import UserError
from disalign.judges.headline import with_headline

LABELS_FILE = "labels.jsonl"
# Below this many labels a normal interval around the labels' mean disagreement means little.
MIN_LABELS = 10
_COMPLEMENTARY = {"keyword", "refusal", "stance"}
_TRUE, _FALSE = {"1", "true", "yes", "y", "t"}, {"0", "false", "no", "n", "f"}
_RATE_OF = {"refused": "refusal_rate", "harmful": "harmful_rate"}
_NOT_COORDINATES = {"n", "ci", "refusal_ci", "rate", "judge", "key", "id"}


def lead_judge(summary: Mapping[str, Any]) -> str:
    return str(summary.get("judge") or "").split(",")[0]


def quantity_of(summary: Mapping[str, Any]) -> str:
    """What a person labels: what the run's deciding judge decides."""
    return "refused" if lead_judge(summary) in _COMPLEMENTARY else "harmful"


def scorable_records(run: Path, quantity: str) -> list[dict[str, Any]]:
    """The run's judged records that a person can label: a key, a decided verdict, a response."""
    return [
        record
        for record in read_records(run)
        if "key" in record and record.get(quantity) is not None and not record.get("unscorable")
    ]


def stratum(record: Mapping[str, Any], quantity: str) -> str:
    verdict = "yes" if record[quantity] else "no"
    panel = record.get("panel") or {}
    said = {bool(v.get(quantity)) for v in panel.values() if v.get(quantity) is not None}
    return f"{quantity}={verdict}" + (", judges disagree" if len(said) > 1 else "")


def draw_sample(records: Sequence[Mapping[str, Any]], size: int, quantity: str, seed: int = 0) -> list[str]:
    """Keys of up to `size` records, strata as equal in size as they allow, in an interleaved
    random order so that a person who stops early has read every stratum."""
    rng = random.Random(seed)
    strata: dict[str, list[str]] = {}
    for record in records:
        strata.setdefault(stratum(record, quantity), []).append(record["key"])
    for keys in strata.values():
        rng.shuffle(keys)
    queues = [strata[name] for name in sorted(strata)]
    drawn: list[str] = []
    while len(drawn) < size and any(queues):
        for queue in queues:
            if queue and len(drawn) < size:
                drawn.append(queue.pop())
    return drawn


def weighted_rows(
    labels: Mapping[str, bool], records: Sequence[Mapping[str, Any]], quantity: str
) -> list[dict[str, Any]]:
    """labels.jsonl rows: each label with its stratum and weight (records / labelled, in its stratum)."""
    by_key = {record["key"]: record for record in records}
    sizes: dict[str, int] = {}
    for record in records:
        name = stratum(record, quantity)
        sizes[name] = sizes.get(name, 0) + 1
    labelled: dict[str, int] = {}
    for key in labels:
        name = stratum(by_key[key], quantity)
        labelled[name] = labelled.get(name, 0) + 1
    return [
        {
            "key": key,
            "label": label,
            "weight": sizes[stratum(by_key[key], quantity)] / labelled[stratum(by_key[key], quantity)],
            "quantity": quantity,
            "stratum": stratum(by_key[key], quantity),
        }
        for key, label in labels.items()
    ]


def write_labels(run: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    path = run / LABELS_FILE
    partial = path.with_name(path.name + ".tmp")
    partial.write_text("".join(json.dumps(dict(row)) + "\n" for row in rows), encoding="utf-8")
    partial.replace(path)
    return path


def read_label(value: Any, where: str) -> bool:
    """A label as a person writes it: true/false, yes/no, y/n, t/f or 1/0, in any case."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise UserError(f"{where}: label {value!r} is not true/false")


def read_labels(path: Path, keys: set[str] | None = None, quantity: str | None = None) -> list[dict[str, Any]]:
    """Rows of a labels file (`key` or `id`, `label`, `weight`: 1 when left out, a uniform sample),
    each checked; a row that names a record not in the run, repeats one, or holds a label or weight
    out of range is named."""
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (IsADirectoryError, UnicodeDecodeError):
        raise UserError(f"{path}: not a UTF-8 JSONL file") from None
    rows, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        data = json_object(line, where)
        key = data.get("key", data.get("id"))
        if key is None:
            raise UserError(f"{where}: no 'key' naming the record it labels")
        key = str(key)
        if keys is not None and key not in keys:
            raise UserError(f"{where}: record '{key}' is not a scorable record of the run")
        if key in seen:
            raise UserError(f"{where}: record '{key}' is labelled twice")
        seen.add(key)
        if quantity is not None and data.get("quantity", quantity) != quantity:
            raise UserError(f"{where}: labels '{data['quantity']}', but the run's judge decides '{quantity}'")
        if "label" not in data:
            raise UserError(f"{where}: no 'label'")
        weight = data.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
            raise UserError(f"{where}: weight must be a positive number, got {weight!r}")
        rows.append({"key": key, "label": read_label(data["label"], where), "weight": float(weight)})
    return rows


def _row_records(row: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records a summary row counts: those that share its coordinates (method, alpha, model, ...)."""
    coordinates = {
        key: value
        for key, value in row.items()
        if key not in _NOT_COORDINATES
        and isinstance(value, str | int | float)
        and not isinstance(value, bool)
        and not key.endswith(("_rate", "_ci", "_corrected", "_ppi"))
        and all(key in record for record in records)
    }
    return [record for record in records if all(record[key] == value for key, value in coordinates.items())]


def ppi_row(
    row: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    labels: Mapping[str, tuple[bool, float]],
    quantity: str,
) -> dict[str, Any]:
    """`R_ppi`, `R_ppi_ci` of one row's rates from its records and the labels among them. Unscorable
    records count as neither, as in the raw rates: the estimate is of the scorable share, scaled."""
    from disalign.core.stats import ppi_rate

    counted = _row_records(row, records)
    scorable = [r for r in counted if not r.get("unscorable") and r.get(quantity) is not None]
    labelled = [r for r in scorable if r["key"] in labels]
    rates = {_RATE_OF[quantity]: False}
    if quantity == "refused":
        rates["harmful_rate"] = True
    added: dict[str, Any] = {}
    for rate_key, flipped in rates.items():
        if rate_key not in row:
            continue
        if len(labelled) < 2:
            added |= {f"{rate_key}_ppi": None, f"{rate_key}_ppi_ci": [None, None]}
            continue
        share = len(scorable) / len(counted)
        found = ppi_rate(
            [bool(r[quantity]) != flipped for r in scorable],
            [bool(r[quantity]) != flipped for r in labelled],
            [labels[r["key"]][0] != flipped for r in labelled],
            [labels[r["key"]][1] for r in labelled],
        )
        added[f"{rate_key}_ppi"] = found["estimate"] * share
        added[f"{rate_key}_ppi_ci"] = [bound * share for bound in found["ci"]]
    added["n_labelled"] = len(labelled)
    return added


def ppi_summary(
    summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]], labels: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The summary with the prediction-powered rates beside the raw and corrected ones."""
    quantity = quantity_of(summary)
    by_key = {row["key"]: (row["label"], row["weight"]) for row in labels}
    judged = [r for r in records if "key" in r]
    out = {**summary, **ppi_row(summary, judged, by_key, quantity)}
    out["results"] = [{**row, **ppi_row(row, judged, by_key, quantity)} for row in summary.get("results", [])]
    out["labels"] = {
        "file": LABELS_FILE,
        "n": len(labels),
        "quantity": quantity,
        "assumes": "the labelled records are a random sample of the run's scorable records, by the weights kept",
    }
    return out


def apply_labels(run: Path, labels_file: Path | None = None) -> dict[str, Any]:
    """Check `labels_file` (or the run's own labels.jsonl) against the run, write RUN/labels.jsonl
    and rewrite RUN/summary.json with the prediction-powered rates. Nothing is written on a mistake."""
    run = Path(run)
    summary_path = run / "summary.json"
    if not summary_path.is_file():
        raise UserError(f"{run}: not a finished run directory (no summary.json)")
    summary = read_json(summary_path)
    if not summary.get("judge"):
        raise UserError(f"{run}: its summary names no judge, so there is nothing to label")
    quantity = quantity_of(summary)
    records = scorable_records(run, quantity)
    source = labels_file or run / LABELS_FILE
    rows = read_labels(source, {r["key"] for r in records}, quantity)
    if len(rows) < MIN_LABELS:
        raise UserError(f"{source}: {len(rows)} labels; the estimate needs at least {MIN_LABELS}")
    if labels_file is not None:
        write_labels(run, [{**row, "quantity": quantity} for row in rows])
    updated = with_headline(ppi_summary(summary, list(read_records(run)), rows))
    write_json_atomic(summary_path, updated)
    return updated
