"""Two runs compared over the prompts both answered: the paired difference of each judged rate.

Records pair by their prompt's text. Where each shared prompt has one decided record in each run,
the difference gets Newcombe's paired interval and McNemar's exact test; where a prompt has several
(seeds, or the same prompt twice), each prompt's rate is averaged within the run and the interval
is a bootstrap over prompts (McNemar's test needs one pair per prompt, so it is left out).
`where_a` / `where_b` keep only the records whose fields have the given values (one alpha of an
ED run, one cell of a fine-tuning run).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from disalign.core.runs import read_json, read_records
from disalign.core.stats import bootstrap_ci, paired_difference
from disalign.errors import UserError

RATE_FIELDS = {"harmful_rate": "harmful", "refusal_rate": "refused", "unscorable_rate": "unscorable"}


def prompt_of(record: Mapping[str, Any]) -> str | None:
    """The request a record answers: generated records keep it as `prompt`, judged files under `input`."""
    prompt = record.get("prompt")
    if prompt is None and isinstance(record.get("input"), Mapping):
        prompt = record["input"].get("prompt")
    return prompt if isinstance(prompt, str) else None


def _matches(record: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    return all(str(record.get(key)) == str(value) for key, value in where.items())


def run_records(path: Path, where: Mapping[str, Any]) -> tuple[str | None, dict[str, list[dict[str, Any]]]]:
    """The run's judge and its records grouped by prompt text."""
    summary_path = Path(path) / "summary.json"
    if not summary_path.is_file():
        raise UserError(f"{path}: not a finished run directory (no summary.json)")
    judge = read_json(summary_path).get("judge")
    by_prompt: dict[str, list[dict[str, Any]]] = {}
    for record in read_records(Path(path)):
        prompt = prompt_of(record)
        if prompt is not None and ("harmful" in record or "refused" in record) and _matches(record, where):
            by_prompt.setdefault(prompt, []).append(record)
    if not by_prompt:
        kept = f" with {', '.join(f'{k}={v}' for k, v in where.items())}" if where else ""
        raise UserError(f"{path}: no judged records{kept}")
    return judge, by_prompt


def _value(record: Mapping[str, Any], field: str) -> bool | None:
    if field == "unscorable":
        return bool(record.get("unscorable"))
    value = record.get(field)
    return None if value is None else bool(value)


def compare_runs(
    run_a: Path,
    run_b: Path,
    *,
    allow_different_judges: bool = False,
    where_a: Mapping[str, Any] | None = None,
    where_b: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Each judged rate of run A minus run B over their shared prompts, with its paired interval."""
    judge_a, records_a = run_records(run_a, where_a or {})
    judge_b, records_b = run_records(run_b, where_b or {})
    if judge_a != judge_b and not allow_different_judges:
        raise UserError(
            f"the runs were judged by different judges ({judge_a} and {judge_b}); "
            "pass --allow-different-judges to compare them anyway"
        )
    shared = sorted(set(records_a) & set(records_b))
    if not shared:
        raise UserError(f"{run_a} and {run_b} share no prompt")
    rows = [_rate_difference(rate, field, shared, records_a, records_b) for rate, field in RATE_FIELDS.items()]
    return {
        "judges": [judge_a, judge_b],
        "shared_prompts": len(shared),
        "only_a": len(records_a) - len(shared),
        "only_b": len(records_b) - len(shared),
        "results": [row for row in rows if row is not None],
    }


def paired_rate(
    records_a: list[dict[str, Any]], records_b: list[dict[str, Any]], rate: str = "harmful_rate"
) -> dict[str, Any] | None:
    """One rate's paired difference (A - B) between two sets of records, paired by prompt; None
    when they share no prompt with a decided verdict on both sides."""
    grouped = []
    for records in (records_a, records_b):
        by_prompt: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            prompt = prompt_of(record)
            if prompt is not None:
                by_prompt.setdefault(prompt, []).append(record)
        grouped.append(by_prompt)
    shared = sorted(set(grouped[0]) & set(grouped[1]))
    return _rate_difference(rate, RATE_FIELDS[rate], shared, *grouped) if shared else None


def _rate_difference(
    rate: str,
    field: str,
    shared: list[str],
    records_a: dict[str, list[dict[str, Any]]],
    records_b: dict[str, list[dict[str, Any]]],
) -> dict[str, Any] | None:
    per_prompt = []
    for prompt in shared:
        a = [v for v in (_value(r, field) for r in records_a[prompt]) if v is not None]
        b = [v for v in (_value(r, field) for r in records_b[prompt]) if v is not None]
        if a and b:
            per_prompt.append((a, b))
    if not per_prompt:
        return None
    if all(len(a) == 1 and len(b) == 1 for a, b in per_prompt):
        found = paired_difference([a[0] for a, _ in per_prompt], [b[0] for _, b in per_prompt])
        return {"rate": rate, **found, "method": "newcombe paired; mcnemar exact"}
    means = np.array([[np.mean(a), np.mean(b)] for a, b in per_prompt])
    differences = means[:, 0] - means[:, 1]
    low, high = bootstrap_ci(differences)
    return {
        "rate": rate,
        "difference": float(differences.mean()),
        "ci": [low, high],
        "n": len(per_prompt),
        "rates": [float(means[:, 0].mean()), float(means[:, 1].mean())],
        "mcnemar_p": None,
        "method": "bootstrap over prompts (several records per prompt)",
    }
