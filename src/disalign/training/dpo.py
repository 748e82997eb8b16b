"""DPO (TRL's DPOTrainer) on preference pairs, full or LoRA, with an optional NLL term on the chosen response.

The NLL term (TRL's `sft` loss beside `sigmoid`, as in RPO) keeps the chosen responses likely:
plain DPO only widens the margin and can lower the likelihood of both responses. With LoRA the
reference model is the base with the adapter switched off (no second copy in memory); full
fine-tuning keeps a frozen copy.
"""

from __future__ import annotations

from typing import Any

from disalign.training.config import TrainingConfig
from disalign.training.preferences import Pair, as_conversation, check_pairs
from disalign.training.sft import FinetuneResult, check_lengths, check_trainable, lora_config, prepare, train_and_save


def dpo(
    model_path,
    pairs: list[Pair],
    config: TrainingConfig,
    out_dir,
    *,
    beta: float = 0.1,
    nll_weight: float = 1.0,
    model=None,
    tokenizer=None,
) -> FinetuneResult:
    """Train `model_path` on the pairs that have a rejected response; saves as `finetune` does."""
    from datasets import Dataset
    from transformers import PrinterCallback, set_seed
    from trl import DPOConfig, DPOTrainer

    pairs = check_pairs(pairs, need_rejected=True)
    model, tokenizer = prepare(model_path, model, tokenizer)
    context = getattr(model.config, "max_position_embeddings", None)
    n_tokens = sum(
        check_lengths([as_conversation(p, p[side]) for p in pairs], tokenizer, config.max_length, context)
        for side in ("chosen", "rejected")
    )
    rows = [
        {
            "prompt": pair["messages"],
            "chosen": [{"role": "assistant", "content": pair["chosen"]}],
            "rejected": [{"role": "assistant", "content": pair["rejected"]}],
        }
        for pair in pairs
    ]
    losses, weights = (["sigmoid", "sft"], [1.0, nll_weight]) if nll_weight > 0 else (["sigmoid"], None)
    args = DPOConfig(
        **config.trainer_options(out_dir, len(rows)),
        max_length=config.max_length,
        beta=beta,
        loss_type=losses,
        loss_weights=weights,
    )
    set_seed(config.seed)
    peft_config = lora_config(model, config) if config.lora else None
    if peft_config is None:
        check_trainable(model)
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.remove_callback(PrinterCallback)
    check_trainable(trainer.model)
    extra: dict[str, Any] = {"method": "dpo", "beta": beta, "nll_weight": nll_weight}
    return train_and_save(trainer, tokenizer, model_path, config, out_dir, len(rows), n_tokens, **extra)
