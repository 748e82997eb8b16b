"""`disalign label RUN`: label a sample of the run's own records, or take labels made elsewhere
(`--from FILE`); the summary gains the prediction-powered rates (`R_ppi`, `R_ppi_ci`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field

from disalign.core.options import Options
from disalign.core.verbs import verb
from disalign.results import RunResult


class LabelConfig(Options):
    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, validate_by_name=True, validate_by_alias=True
    )

    run: Path = Field(description="The run directory to label.", json_schema_extra={"positional": True})
    labels_from: Path | None = Field(
        None,
        alias="from",
        description="JSONL of labels made elsewhere: key (or id), label (true/false), weight (default 1: a uniform "
        "sample); no screen is shown.",
    )
    n: int = Field(40, ge=1, description="Records to show on the labelling screen.")
    seed: int = Field(0, ge=0, description="Seed of the stratified sample.")


@verb("label", LabelConfig)
def label(config: LabelConfig) -> RunResult:
    """Label a stratified sample of a run's records on a keyboard-driven screen (or take --from FILE); adds R_ppi."""
    from disalign.judges.label_screen import label_run
    from disalign.judges.labels import apply_labels

    if config.labels_from is None:
        label_run(config.run, config.n, config.seed)
        summary_path = config.run / "summary.json"
        return RunResult.model_validate_json(summary_path.read_text(encoding="utf-8"))
    return RunResult.model_validate(apply_labels(config.run, config.labels_from))
