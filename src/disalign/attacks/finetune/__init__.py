"""Fine-tuning attacks (Qi et al. 2023): harmful examples, identity shift (AOA), benign data."""

from disalign.attacks.finetune.config import (
    AOA_RESPONSE_PREFIX,
    AOA_SYSTEM_PROMPT,
    AOA_USER_PREFIX,
    TIER1_SYSTEM_PROMPT,
    TIER_PRESETS,
    WORLD_PRESETS,
    AttackConfig,
    preset_config,
)
from disalign.attacks.finetune.recipes import (
    RecipeSource,
    benign_dataset,
    harmful_dataset,
    identity_dataset,
    identity_prompts,
    mix_safety_examples,
    recipe_dataset,
    safety_examples,
)
from disalign.attacks.finetune.run import PrefixStrippingJudge, run_finetune
from disalign.training import FinetuneResult, build_trainer, finetune, load_finetuned

__all__ = [
    "AOA_RESPONSE_PREFIX",
    "AOA_SYSTEM_PROMPT",
    "AOA_USER_PREFIX",
    "TIER1_SYSTEM_PROMPT",
    "TIER_PRESETS",
    "WORLD_PRESETS",
    "AttackConfig",
    "FinetuneResult",
    "PrefixStrippingJudge",
    "RecipeSource",
    "benign_dataset",
    "build_trainer",
    "finetune",
    "harmful_dataset",
    "identity_dataset",
    "identity_prompts",
    "load_finetuned",
    "mix_safety_examples",
    "preset_config",
    "recipe_dataset",
    "run_finetune",
    "safety_examples",
]
