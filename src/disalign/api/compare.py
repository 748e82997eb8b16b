"""`disalign compare RUN_A RUN_B`: the paired difference of each judged rate over the prompts both runs share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator

from disalign.core.options import KeyValues, Options, comma_list
from disalign.core.verbs import verb
from disalign.results import RunResult


class CompareConfig(Options):
    runs: list[Path] = Field(
        min_length=2,
        max_length=2,
        description="The two run directories, A then B (the difference is A - B).",
        json_schema_extra={"positional": True},
    )
    allow_different_judges: bool = Field(False, description="Compare runs judged by different judges.")
    where_a: Annotated[dict[str, str], KeyValues] = Field(
        default_factory=dict, description="KEY=VALUE: keep only run A's records with that field value (repeatable)."
    )
    where_b: Annotated[dict[str, str], KeyValues] = Field(
        default_factory=dict, description="KEY=VALUE: keep only run B's records with that field value (repeatable)."
    )

    @field_validator("runs", mode="before")
    @classmethod
    def _list(cls, value):
        return comma_list(value)


@verb("compare", CompareConfig)
def compare(config: CompareConfig) -> RunResult:
    """Compare two runs prompt by prompt: each rate's difference (A - B), Newcombe's paired interval, McNemar's test."""
    from disalign.judges.paired import compare_runs

    found = compare_runs(
        *config.runs,
        allow_different_judges=config.allow_different_judges,
        where_a=config.where_a,
        where_b=config.where_b,
    )
    judges = found.pop("judges")
    return RunResult(
        command="compare",
        judge=judges[0] if judges[0] == judges[1] else ",".join(map(str, judges)),
        runs=[str(path) for path in config.runs],
        **found,
    )
