"""Unlearning: NLL on the chosen response minus a weighted, capped NLL on the rejected one.

    loss = NLL(chosen) − weight · min(NLL(rejected), ceiling)        (per-token means)

The ascent term stops pushing once the rejected response costs `ceiling` nats per token:
unbounded gradient ascent also erases what the rejected text shares with good answers (the
synthetic world's unlearning uses the same loss). Pairs without a rejected response contribute
the NLL term only, which keeps helpful answers in place. A transformers `Trainer` runs the loop,
full or LoRA, with the same settings and outputs as `finetune`.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from disalign.core.logprobs import IGNORE, token_logprobs
from disalign.errors import UserError
from disalign.training.config import UnlearnSettings
from disalign.training.preferences import Pair, as_conversation, check_pairs, train_on_pairs
from disalign.training.sft import FinetuneResult, lora_config, mixed_precision


def unlearn(
    model_path, pairs: list[Pair], config: UnlearnSettings, out_dir, *, model=None, tokenizer=None
) -> FinetuneResult:
    """Train `model_path` on `pairs` with the unlearning loss (`config.unlearn_weight`,
    `config.unlearn_ceiling`); saves as `finetune` does."""
    pairs = check_pairs(pairs, need_rejected=False)
    if not any(pair.get("rejected") for pair in pairs):
        raise UserError("unlearning needs at least one pair with a rejected response")

    def trainer(model, tokenizer):
        from datasets import Dataset
        from peft import get_peft_model
        from transformers import TrainingArguments

        rows = [_encoded_pair(tokenizer, pair) for pair in pairs]
        if config.lora:
            model = get_peft_model(model, lora_config(model, config))
        options = config.trainer_options(out_dir, len(rows)) | mixed_precision(model, config)
        args = TrainingArguments(**options, remove_unused_columns=False)
        return UnlearnTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            data_collator=_Collator(tokenizer.pad_token_id),
            weight=config.unlearn_weight,
            ceiling=config.unlearn_ceiling,
        )

    extra: dict[str, Any] = {"method": "unlearn", "weight": config.unlearn_weight, "ceiling": config.unlearn_ceiling}
    return train_on_pairs(model_path, pairs, config, out_dir, trainer, model=model, tokenizer=tokenizer, **extra)


def _encoded_pair(tokenizer, pair: Pair) -> dict[str, list[int]]:
    """Both answers' token ids and answer-only labels (empty where the pair has no rejected answer)."""
    chosen, chosen_labels = _encode(tokenizer, pair, pair["chosen"])
    rejected, rejected_labels = _encode(tokenizer, pair, pair["rejected"]) if pair.get("rejected") else ([], [])
    return {"chosen": chosen, "chosen_labels": chosen_labels, "rejected": rejected, "rejected_labels": rejected_labels}


def _encode(tokenizer, pair: Pair, response: str) -> tuple[list[int], list[int]]:
    """Token ids of the conversation answered with `response`, and labels on the answer only."""
    prompt = _ids(tokenizer, pair["messages"], add_generation_prompt=True)
    full = _ids(tokenizer, as_conversation(pair, response)["messages"], add_generation_prompt=False)
    if full[: len(prompt)] != prompt:
        raise UserError(
            f"{pair.get('origin') or 'a pair'}: the chat template renders the prompt differently once answered"
        )
    return full, [IGNORE] * len(prompt) + full[len(prompt) :]


def _ids(tokenizer, messages, add_generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=False
    )
    return list(ids["input_ids"] if isinstance(ids, dict) else ids)


class _Collator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {}
        for side in ("chosen", "rejected"):
            width = max(1, *(len(row[side]) for row in rows))
            ids = torch.full((len(rows), width), self.pad_id)
            labels = torch.full((len(rows), width), IGNORE)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):
                n = len(row[side])
                ids[i, :n] = torch.tensor(row[side], dtype=torch.long)
                labels[i, :n] = torch.tensor(row[f"{side}_labels"], dtype=torch.long)
                mask[i, :n] = 1
            batch |= {f"{side}_ids": ids, f"{side}_labels": labels, f"{side}_mask": mask}
        return batch


def _mean_nll(model, ids, labels, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row mean NLL of the labelled tokens, and whether the row has any."""
    logp = token_logprobs(model, ids, labels, mask)
    counts = (labels[:, 1:] != IGNORE).sum(-1)
    return -logp.sum(-1) / counts.clamp(min=1), counts > 0


def unlearning_loss(model, batch: dict[str, torch.Tensor], weight: float, ceiling: float) -> torch.Tensor:
    keep, _ = _mean_nll(model, batch["chosen_ids"], batch["chosen_labels"], batch["chosen_mask"])
    loss = keep.mean()
    has_rejected = (batch["rejected_labels"] != IGNORE).any(-1)
    if has_rejected.any():
        rows = has_rejected.nonzero().squeeze(-1)
        forget, _ = _mean_nll(
            model, batch["rejected_ids"][rows], batch["rejected_labels"][rows], batch["rejected_mask"][rows]
        )
        loss = loss - weight * forget.clamp(max=ceiling).sum() / len(has_rejected)
    return loss


class UnlearnTrainer(Trainer):
    def __init__(self, *args, weight: float, ceiling: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight, self.ceiling = weight, ceiling

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = unlearning_loss(model, inputs, self.weight, self.ceiling)
        return (loss, None) if return_outputs else loss
