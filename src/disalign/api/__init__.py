"""The Python API: one function per verb, the same names as the CLI.

    import disalign
    result = disalign.eval(model="runs/zoo/sft", prompts="world:unsafe", world="runs/zoo", judge="world")
    result.results[0].harmful_rate

Each function takes its typed config (or a dict, or keyword options), validated once, and
returns the RunResult that `summary.json` holds; `out=None` runs in memory and writes nothing.
"""

import disalign.world  # noqa: F401  (registers the world's prompt source, judge and verbs)
from disalign.api import analyze, beb  # analyze.clusters, .weights, ...; beb.estimate, .curve, ...
from disalign.api.ablate import AblateConfig, ablate
from disalign.api.align import AlignVerbConfig, align
from disalign.api.compare import CompareConfig, compare
from disalign.api.defend import DefendConfig, defend
from disalign.api.ed import EDConfig, ed
from disalign.api.eval import EvalConfig, eval
from disalign.api.finetune import FinetuneConfig, finetune
from disalign.api.judge import JudgeConfig, judge
from disalign.api.label import LabelConfig, label
from disalign.api.report import ReportConfig, report
from disalign.core.verbs import VERBS

__all__ = [
    "VERBS",
    "AblateConfig",
    "AlignVerbConfig",
    "CompareConfig",
    "DefendConfig",
    "EDConfig",
    "EvalConfig",
    "FinetuneConfig",
    "JudgeConfig",
    "LabelConfig",
    "ReportConfig",
    "ablate",
    "align",
    "analyze",
    "beb",
    "compare",
    "defend",
    "ed",
    "eval",
    "finetune",
    "judge",
    "label",
    "report",
]
