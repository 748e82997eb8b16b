"""Which harmful rate a summary quotes first: the one measured with the least left to trust."""

from __future__ import annotations

from typing import Any

HEADLINE_ORDER = (("ppi", "labels from this run"), ("corrected", "the judge's measured error"), ("", "the judge alone"))


def with_headline(summary: dict[str, Any]) -> dict[str, Any]:
    """Which harmful rate to quote: from the run's own labels where they exist, else corrected for
    the judge's measured error, else the raw judged rate."""
    if summary.get("harmful_rate") is None:
        return summary
    for suffix, source in HEADLINE_ORDER:
        key = f"harmful_rate_{suffix}" if suffix else "harmful_rate"
        if summary.get(key) is not None:
            interval = summary.get(f"{key}_ci") if suffix else summary.get("ci")
            return {**summary, "headline": {"harmful_rate": summary[key], "ci": interval, "key": key, "from": source}}
    return summary
