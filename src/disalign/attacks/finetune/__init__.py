"""Fine-tuning attacks (Qi et al. 2023): harmful examples, identity shift (AOA), benign data."""

from disalign.attacks.finetune.config import (
    AOA_RESPONSE_PREFIX,
    AOA_SYSTEM_PROMPT,
    AOA_USER_PREFIX,
    TIER1_SYSTEM_PROMPT,
    TIER_PRESETS,
    FinetuneConfig,
)
from disalign.attacks.finetune.recipes import (
    aoa_prompts,
    benign_dataset,
    harmful_dataset,
    identity_dataset,
    mix_safety,
    safety_examples,
    world_dataset,
    world_identity_prompts,
)
from disalign.attacks.finetune.run import PrefixStrippingJudge, run_finetune
from disalign.attacks.finetune.train import FinetuneResult, build_trainer, finetune, load_finetuned

__all__ = [
    "AOA_RESPONSE_PREFIX",
    "AOA_SYSTEM_PROMPT",
    "AOA_USER_PREFIX",
    "TIER1_SYSTEM_PROMPT",
    "TIER_PRESETS",
    "FinetuneConfig",
    "FinetuneResult",
    "PrefixStrippingJudge",
    "aoa_prompts",
    "benign_dataset",
    "build_trainer",
    "finetune",
    "harmful_dataset",
    "identity_dataset",
    "load_finetuned",
    "mix_safety",
    "run_finetune",
    "safety_examples",
    "world_dataset",
    "world_identity_prompts",
]
