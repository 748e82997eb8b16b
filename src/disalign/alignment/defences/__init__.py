"""Defences: safety tuning meant to survive attacks, each behind the `Defence` contract of `base.py`,
one module per method (deepen, extended, ablation-robust, booster); `run_defend` trains one."""

from disalign.alignment.defences.ablation_robust import AblationRobust, AblationRobustSettings
from disalign.alignment.defences.base import Defence, DefenceSettings
from disalign.alignment.defences.booster import Booster, BoosterSettings
from disalign.alignment.defences.deepen import Deepen, DeepenSettings
from disalign.alignment.defences.extended import Extended, ExtendedSettings
from disalign.alignment.defences.run import run_defend

DEFENCES: dict[str, type[Defence]] = {cls.name: cls for cls in (Deepen, Extended, AblationRobust, Booster)}

__all__ = [
    "DEFENCES",
    "AblationRobustSettings",
    "BoosterSettings",
    "DeepenSettings",
    "Defence",
    "DefenceSettings",
    "ExtendedSettings",
    "run_defend",
]
