"""Behavior Expectation Bounds (Wolf et al.) and many-shot scaling (Anil et al.): how long an
adversarial prompt must be before a model behaves badly, estimated and measured."""

from disalign.analyses.beb.estimators import BoundSettings, Estimate, estimate, fit_power_law, observed_flip
from disalign.analyses.beb.settings import Sentence, Setting, Target, available_settings, get_setting, register_setting

__all__ = [
    "BoundSettings",
    "Estimate",
    "Sentence",
    "Setting",
    "Target",
    "available_settings",
    "estimate",
    "fit_power_law",
    "get_setting",
    "observed_flip",
    "register_setting",
]
