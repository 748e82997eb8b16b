"""DPO (TRL's DPOTrainer) on preference pairs, full or LoRA, with an optional NLL term on the chosen response.

The NLL term (TRL's `sft` loss beside `sigmoid`, as in RPO) keeps the chosen responses likely:
plain DPO only widens the margin and can lower the likelihood of both responses. With LoRA the
reference model is the base with the adapter switched off (no second copy in memory); full
fine-tuning keeps a frozen copy.
"""

from __future__ import annotations

from typing import Any

from disalign.training.config import DPOSettings
from disalign.training.preferences import Pair, check_pairs, train_on_pairs
from disalign.training.sft import FinetuneResult, check_trainable, lora_config, mixed_precision


def dpo(model_path, pairs: list[Pair], config: DPOSettings, out_dir, *, model=None, tokenizer=None) -> FinetuneResult:
    """Train `model_path` on the pairs that have a rejected response, with `config.beta` and
    `config.nll_weight`; saves as `finetune` does."""
    pairs = check_pairs(pairs, need_rejected=True)

    def trainer(model, tokenizer):
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        rows = [
            {
                "prompt": pair["messages"],
                "chosen": [{"role": "assistant", "content": pair["chosen"]}],
                "rejected": [{"role": "assistant", "content": pair["rejected"]}],
            }
            for pair in pairs
        ]
        nll = config.nll_weight
        losses, weights = (["sigmoid", "sft"], [1.0, nll]) if nll > 0 else (["sigmoid"], None)
        args = DPOConfig(
            **(config.trainer_options(out_dir, len(rows)) | mixed_precision(model, config)),
            max_length=config.max_length,
            beta=config.beta,
            loss_type=losses,
            loss_weights=weights,
        )
        peft_config = lora_config(model, config) if config.lora else None
        if peft_config is None:
            check_trainable(model)
        return DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
        )

    extra: dict[str, Any] = {"method": "dpo", "beta": config.beta, "nll_weight": config.nll_weight}
    return train_on_pairs(model_path, pairs, config, out_dir, trainer, model=model, tokenizer=tokenizer, **extra)
