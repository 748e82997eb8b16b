"""The one shape every prompt source produces."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

UNCATEGORISED = "uncategorised"


@dataclass(frozen=True)
class PromptRecord:
    """One prompt to send to a model.

    `id` is stable across reloads of the same file, so a resumed run can skip what it has done;
    `source` names the data set; `extra` keeps the source's other columns (targets, tags, ...).
    """

    id: str
    prompt: str
    category: str
    source: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
