"""`disalign report`: one self-contained HTML page over run directories."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from disalign.core.options import CommaSeparated, Options
from disalign.core.verbs import verb
from disalign.results import RunResult


class ReportConfig(Options):
    runs: Annotated[list[Path], CommaSeparated] = Field(
        min_length=1,
        description="Run directories (as arguments, or --runs repeatable or comma-separated); a demo or sweep "
        "counts as its runs.",
        json_schema_extra={"positional": True},
    )
    out: Path = Field(Path("report.html"), description="The HTML page to write.")
    pair: str | None = Field(None, description="BASE,ALIGNED: the model pair to report where runs cover several.")
    max_records: int = Field(20_000, ge=0, description="Most records of one run kept for the drill-down.")


@verb("report", ReportConfig)
def report(config: ReportConfig) -> RunResult:
    """Write one HTML page: a fragility card per model pair, then each run's tables, plots and records."""
    from disalign.core.progress import console
    from disalign.reporting.report import card_json, write_report

    runs, cards, page = write_report(config.runs, config.out, config.pair, max_records=config.max_records)
    console.print(f"wrote {page}")
    return RunResult(
        command="report", report=str(page), runs=[str(run.path) for run in runs], cards=[card_json(c) for c in cards]
    )
