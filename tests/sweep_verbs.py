"""A cheap verb for sweep tests and benchmarks: seeded coin flips written one record at a time.

Imported by name ("sweep_verbs:coin_flips") in pool and Ray workers, so it lives in its own
module rather than in a test file.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from disalign.core.runs import RunDir
from disalign.core.stats import rate_summary
from disalign.results import ResultRow, RunResult


def coin_flips(config: dict) -> RunResult:
    """`n` flips seeded by `seed`, `delay` seconds apart; `fail: true` raises after the first.
    Each call adds a line to OUT.calls beside the cell's directory, so a test can count calls."""
    settings = {key: value for key, value in config.items() if key != "out"}
    run = RunDir(config["out"], "coin flips", settings)
    calls = Path(config["out"] + ".calls")
    calls.parent.mkdir(parents=True, exist_ok=True)
    with calls.open("a") as log:
        log.write("call\n")
    for index in range(config.get("n", 5)):
        if run.is_done(str(index)):
            continue
        if config.get("fail") and index == 1:
            raise RuntimeError(f"cell with seed {config['seed']} fails on purpose")
        flip = random.Random(config["seed"] * 1000 + index).random() < config.get("p", 0.5)
        run.append([{"key": str(index), "harmful": flip}])
        time.sleep(config.get("delay", 0.0))
    flips = [record["harmful"] for record in run.records()]
    row = ResultRow(**rate_summary(flips), seed=config["seed"], p=config.get("p", 0.5))
    result = RunResult(command="coin flips", judge="coin", results=[row])
    run.write_summary(result.to_json())
    return result


def trivial(config: dict) -> RunResult:
    """No work at all: what a sweep costs per cell beyond the verb."""
    return RunResult(command="trivial", results=[ResultRow(harmful_rate=0.0, n=1, seed=config["seed"])])
