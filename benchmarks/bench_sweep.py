"""What a sweep costs beyond its cells: 100 trivial cells through each executor.

For each executor, a sweep of one cell per worker gives the fixed cost (starting a pool or a Ray
cluster, whose workers import disalign) and a 100-cell sweep the rest: per-cell overhead =
(t100 - t_fixed) / (100 - workers) (a worker round trip, one fsynced record per cell, the table at
the end); best of two runs each.
Ray runs a local cluster (Ray 2.60 has no local mode any more) when Ray is installed. Prints one
JSON object on its last line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from disalign.results import ResultRow, RunResult

CELLS = 100
GOAL_PER_CELL_MS = 50.0  # local executor, sequential


def trivial(config: dict) -> RunResult:
    """A verb that does nothing: the cell's whole cost is the sweep's."""
    return RunResult(command="trivial", results=[ResultRow(harmful_rate=0.0, n=1, seed=config["seed"])])


def seconds(out: Path, cells: int, **executor) -> float:
    from disalign.lab.sweep import run_sweep

    spec = {"verb": "bench_sweep:trivial", "out": str(out), "grid": {"seed": list(range(cells))}, **executor}
    start = time.perf_counter()
    result = run_sweep(spec)
    elapsed = time.perf_counter() - start
    assert result.failed == 0 and len(result.results) == cells, result.cells[:3]
    return elapsed


def main() -> dict:
    # Pool and Ray workers import this module by name.
    here = str(Path(__file__).parent)
    sys.path.insert(0, here)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    executors = {"local": {}, "local pool (2 workers)": {"workers": 2}}
    try:
        import ray  # noqa: F401

        executors["ray local cluster (2 CPUs)"] = {"executor": "ray", "workers": 2}
    except ImportError:
        print("ray not installed: its row is skipped (pip install 'disalign[ray]')", file=sys.stderr)
    figures = {}
    with tempfile.TemporaryDirectory() as scratch:
        seconds(Path(scratch, "warm-up"), 1)  # this process's imports, paid once by any sweep
        for index, (name, executor) in enumerate(executors.items()):
            # Best of two: worker start-up varies with what else the machine runs.
            # As many cells as workers, so that the fixed part starts every worker.
            first = executor.get("workers", 1)
            fixed = min(seconds(Path(scratch, f"{index}-fixed-{r}"), first, **executor) for r in range(2))
            many = min(seconds(Path(scratch, f"{index}-many-{r}"), CELLS, **executor) for r in range(2))
            figures[name] = {
                "fixed_s": round(fixed, 3),
                f"{CELLS}_cells_s": round(many, 3),
                "per_cell_ms": round(1000 * (many - fixed) / (CELLS - first), 2),
            }
    return {
        "benchmark": "sweep",
        "cells": CELLS,
        "executors": figures,
        "goal_local_per_cell_ms": GOAL_PER_CELL_MS,
        "meets_goal": figures["local"]["per_cell_ms"] <= GOAL_PER_CELL_MS,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
