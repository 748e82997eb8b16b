"""The one result schema every verb returns and writes as `summary.json`.

    command           the verb ("eval", "ed", "finetune", "world eval", "analyze clusters", ...)
    models            name -> what the run read or measured of that model ({"path": ...} at least)
    judge             the judge's name (None where no judge decides anything)
    judge_validation  how far that judge is known to be right (None until measured)
    results           rows: grid coordinates (method, alpha, shots, epochs, layer, set, ...) and
                      harmful_rate / refusal_rate with ci and n, plus what the verb adds

A verb keeps the keys earlier issues named beside these (`before` and `cells` of finetune, the
top-level `harmful_rate` of eval, ...): extra keys are allowed on the result and on each row.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ResultRow(BaseModel):
    """One cell of a run's grid. Rate fields are None where the run measured no rate."""

    model_config = ConfigDict(extra="allow")

    harmful_rate: float | None = None
    refusal_rate: float | None = None
    ci: tuple[float | None, float | None] | None = None
    n: int = Field(0, ge=0)


class RunResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    command: str
    models: dict[str, Any] = Field(default_factory=dict)
    judge: str | None = None
    judge_validation: dict[str, Any] | None = None
    results: list[ResultRow] = Field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """What `summary.json` holds."""
        return self.model_dump(mode="json")

    def rows(self, **where: Any) -> list[ResultRow]:
        """The rows whose coordinates equal every `where` value, e.g. `rows(method="ed", alpha=1.0)`."""
        return [row for row in self.results if all(getattr(row, key, None) == value for key, value in where.items())]
