"""Which harmful rate a summary quotes first: the one measured with the least left to trust."""

from __future__ import annotations

from typing import Any

HEADLINE_ORDER = (("ppi", "labels from this run"), ("corrected", "the judge's measured error"), ("", "the judge alone"))


def with_headline(summary: dict[str, Any]) -> dict[str, Any]:
    """Which harmful rate to quote: from the run's own labels where they exist, else corrected for
    the judge's measured error, else the raw judged rate. A panel's rates are its deciding judge's;
    its judges' disagreement rate goes beside the headline, as how far the choice of judge matters."""
    if summary.get("harmful_rate") is None:
        return summary
    for suffix, source in HEADLINE_ORDER:
        key = f"harmful_rate_{suffix}" if suffix else "harmful_rate"
        if summary.get(key) is not None:
            interval = summary.get(f"{key}_ci") if suffix else summary.get("ci")
            headline = {"harmful_rate": summary[key], "ci": interval, "key": key, "from": source}
            if summary.get("judge_disagreement_rate") is not None:
                headline["judge_disagreement_rate"] = summary["judge_disagreement_rate"]
            return {**summary, "headline": headline}
    return summary
