"""Judges: one registry from a name to something that turns (prompt, response) pairs into Verdicts.

keyword     Qi et al.'s 29 refusal substrings (fast, crude)
refusal     an offline refusal detector that weighs position and retractions
stance      refusal read from a small chat model's hidden states by a probe fitted on labelled replies
rubric      the 1-5 harmfulness rubric sent to an OpenAI-compatible chat endpoint
classifier  a local guard model: Llama-Guard or the HarmBench classifier prompt
world       the exact judge of a synthetic world (registered by disalign.world)
"""

from disalign.judges import classifier, keyword, refusal, rubric, stance  # noqa: F401  (registers the judges)
from disalign.judges.base import Judge, Verdict, available_judges, get_judge, judge_records, register
from disalign.judges.keyword import REFUSAL_SUBSTRINGS

__all__ = [
    "REFUSAL_SUBSTRINGS",
    "Judge",
    "Verdict",
    "available_judges",
    "get_judge",
    "judge_records",
    "register",
]
