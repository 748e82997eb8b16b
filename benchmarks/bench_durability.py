"""The demo's durability section alone, timed on a zoo (issue 29's budget: ≤ 120 s added to the demo).

`python benchmarks/bench_durability.py [ZOO] [--keep DIR]`: with no ZOO a quick zoo is built first (not
timed). The section defends sft (deepen, 8 steps) and runs `disalign durability` on the pair with its cut
grids. Prints the section's table, its wall-clock seconds and the CPU seconds of this process and its
children from the section's start (wall time is the figure to compare with the budget on an idle machine;
on a shared one CPU time is the steadier), and a JSON object on the last line.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from disalign.core.progress import results_console  # noqa: E402
from disalign.core.runs import RunDir  # noqa: E402
from disalign.judges import get_judge  # noqa: E402
from disalign.lab.demo.base import DemoContext  # noqa: E402
from disalign.lab.demo.durability import SECTION  # noqa: E402
from disalign.world import build_zoo, load_world_config, make_config  # noqa: E402
from disalign.world.evaluate import sampling_for  # noqa: E402
from disalign.world.zoo import load_world  # noqa: E402

BUDGET_S = 120


def cpu_seconds() -> float:
    usages = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return sum(usage.ru_utime + usage.ru_stime for usage in usages)


def main(arguments: list[str]) -> dict:
    keep = Path(arguments[arguments.index("--keep") + 1]) if "--keep" in arguments else None
    given = [argument for argument in arguments if not argument.startswith("--") and Path(argument).is_dir()]
    workdir = keep or Path(tempfile.mkdtemp(prefix="bench-durability-"))
    zoo = Path(given[0]) if given else workdir / "zoo"
    if not given:
        build_zoo(zoo, make_config(quick=True))
    config, world = load_world_config(zoo), load_world(zoo)
    run = RunDir(workdir / "demo", "demo", {"zoo": str(zoo.resolve())})
    ctx = DemoContext(zoo, run, config, {}, world, get_judge("world", world=world), sampling_for(world, config.eval))
    cpu_start, start = cpu_seconds(), time.perf_counter()
    section = SECTION.run(ctx)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    results_console.print(SECTION.render(section))
    for line in SECTION.notes(section):
        results_console.print(line)
    load = os.getloadavg()
    print(f"durability section: {wall:.1f} s wall, {cpu:.1f} s CPU (budget {BUDGET_S} s); load average {load[0]:.1f}")
    return {"zoo": str(zoo), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_average": round(load[0], 1)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
