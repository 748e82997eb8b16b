"""The training room: TRL's SFTTrainer with assistant-only loss, full or LoRA, for every verb that trains."""

from disalign.training.config import TrainingConfig
from disalign.training.sft import RESULT, FinetuneResult, build_trainer, finetune, load_finetuned

__all__ = ["RESULT", "FinetuneResult", "TrainingConfig", "build_trainer", "finetune", "load_finetuned"]
