"""disalign: measure how easily a language model's safety alignment is undone, and explain why.

Every verb of the `disalign` command is a function here with the same name, taking its typed
config and returning the result its run writes as summary.json:

    import disalign
    disalign.world.build(out="runs/zoo", quick=True)
    result = disalign.ed(base="runs/zoo/base", aligned="runs/zoo/sft", prompts="world:unsafe",
                         world="runs/zoo", judge="world", alpha=[0, 0.5, 1])
    [(row.alpha, row.harmful_rate, row.ci) for row in result.results]
"""

__version__ = "0.1.0"

from disalign import api, world  # noqa: E402
from disalign.api import *  # noqa: E402, F403  (every verb and its config, as api.__all__ lists them)
from disalign.errors import UserError  # noqa: E402
from disalign.lab.demo.run import DemoConfig, demo  # noqa: E402
from disalign.lab.durability import DurabilityConfig, durability  # noqa: E402
from disalign.lab.surface import SurfaceConfig, surface  # noqa: E402
from disalign.lab.sweep import SweepConfig, sweep  # noqa: E402
from disalign.results import ResultRow, RunResult  # noqa: E402

__all__ = [
    "DemoConfig",
    "DurabilityConfig",
    "ResultRow",
    "RunResult",
    "SurfaceConfig",
    "SweepConfig",
    "UserError",
    "demo",
    "durability",
    "surface",
    "sweep",
    "world",
]
__all__ += api.__all__
