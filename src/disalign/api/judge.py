"""`disalign judge`: judge existing responses; with labels, measure the judge against them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from disalign.api.common import finish, judge_of, open_run
from disalign.core.options import JudgeOptions, RunOptions
from disalign.core.runs import fingerprint
from disalign.core.verbs import verb
from disalign.results import RunResult


class JudgeConfig(JudgeOptions, RunOptions):
    responses: Path = Field(description="JSONL, JSON or CSV file with 'prompt' and 'response' fields.")
    world: Path | None = Field(None, description="Zoo directory, for the world judge.")
    label_field: str | None = Field(None, description="Field holding a human label (true/false).")
    label_kind: str = Field("harmful", description="What the label means: refused or harmful.")


@verb("judge", JudgeConfig)
def judge(config: JudgeConfig) -> RunResult:
    """Judge existing responses; with --label-field, also measure the judge against the labels."""
    from disalign.data.files import read_rows
    from disalign.judges.validate import judge_fields, judge_rows, remember_validation

    rows = read_rows(config.responses)
    the_judge = judge_of(config)
    data = fingerprint([row for _, row in rows])
    run = open_run(config, "judge", {"responses": data})
    summary = judge_rows(rows, the_judge, run, label_field=config.label_field, label_kind=config.label_kind)
    validation = summary.get("validation")
    if validation and validation["n"]:
        remember_validation(the_judge, validation, str(config.responses), data)
    row = {key: summary[key] for key in ("harmful_rate", "refusal_rate", "unscorable_rate", "ci", "n")}
    result = RunResult(command="judge", results=[row], **judge_fields(the_judge), **summary)
    return finish(run, result)
