"""`disalign sweep`: one verb over a grid of configs, resumable, in this process, a pool or on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from disalign.core.options import Options
from disalign.core.verbs import verb
from disalign.results import RunResult


class SweepConfig(Options):
    spec: Path = Field(
        description="Sweep spec, YAML or JSON: verb, out, config, grid (see the README's Sweeps).",
        json_schema_extra={"positional": True},
    )
    executor: Literal["local", "ray"] | None = Field(None, description="Where cells run (default: the spec's).")
    workers: int | None = Field(None, ge=1, description="Cells at once (default: the spec's, else 1).")
    address: str | None = Field(None, description="Ray cluster address; none starts a local cluster.")
    out: Path | None = Field(None, description="The sweep's directory (default: the spec's).")


@verb("sweep", SweepConfig)
def sweep(config: SweepConfig) -> RunResult:
    """Run a verb over a grid of configs; skips finished cells, records failed ones and goes on."""
    from disalign.reporting.sweep import sweep as run_sweep

    overrides = config.model_dump(exclude={"spec"})
    return run_sweep(config.spec, **overrides)
