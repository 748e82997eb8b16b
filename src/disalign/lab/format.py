"""How the lab's tables write numbers (percents, intervals, numbers) and notes, one way everywhere."""

from __future__ import annotations

import math
from collections.abc import Sequence


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def pct(value: float | None, digits: int = 0, *, signed: bool = False) -> str:
    """`0.125` -> `"12%"` (or `"12.5%"` with digits=1, `"+12%"` signed, for a change); blank where there is no value."""
    if _missing(value):
        return ""
    return f"{value:+.{digits}%}" if signed else f"{value:.{digits}%}"


def pct_ci(value: float | None, ci: Sequence[float | None] | None, digits: int = 0) -> str:
    """`"12% [8%, 18%]"`: a rate and its 95 % interval."""
    if _missing(value):
        return ""
    if not ci or _missing(ci[0]) or _missing(ci[1]):
        return pct(value, digits)
    return f"{pct(value, digits)} [{pct(ci[0], digits)}, {pct(ci[1], digits)}]"


def number(value: float | None, digits: int = 3) -> str:
    return "" if _missing(value) else f"{value:.{digits}f}"


def claim_notes(claims: Sequence[dict]) -> list[str]:
    """One line per checked claim: `model: claim: holds (evidence)`, or `does NOT hold`."""
    return [
        f"{claim['model']}: {claim['claim']}: {'holds' if claim['holds'] else 'does NOT hold'} ({claim['evidence']})"
        for claim in claims
    ]
