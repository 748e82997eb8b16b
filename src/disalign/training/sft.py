"""Fine-tune a causal LM on conversations with loss on the assistant tokens only (TRL SFTTrainer).

Masking: a chat template with `{% generation %}` markers is trained with TRL's
`assistant_only_loss`; any other template is turned into prompt/completion pairs
(`completion_only_loss`), so the prompt (system + user + assistant header) carries label -100
and the answer with its end-of-turn token is trained in both cases.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from disalign.errors import UserError
from disalign.training.config import TrainingConfig

_GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")
RESULT = "result.json"


@dataclass
class FinetuneResult:
    model_dir: Path
    losses: list[float]
    tokens_per_second: float
    seconds: float
    lora: bool = False
    n_examples: int = 0
    n_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model_dir"] = str(self.model_dir)
        return data


def has_generation_markers(tokenizer) -> bool:
    template = tokenizer.chat_template
    return isinstance(template, str) and bool(_GENERATION_TAG.search(template))


def to_trl_dataset(dataset: list[dict[str, Any]], tokenizer):
    """A `datasets.Dataset` in the form TRL masks correctly for this tokenizer."""
    from datasets import Dataset

    if not dataset:
        raise UserError("the fine-tuning dataset is empty")
    if has_generation_markers(tokenizer):
        rows = [{"messages": example["messages"]} for example in dataset]
    else:
        rows = []
        for example in dataset:
            messages = example["messages"]
            if messages[-1]["role"] != "assistant":
                raise UserError(f"{example.get('origin', '?')}: the last turn must be the assistant's")
            rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return Dataset.from_list(rows)


def sft_config(config: TrainingConfig, out_dir: Path, tokenizer, n_examples: int, **overrides: Any):
    from trl import SFTConfig

    markers = has_generation_markers(tokenizer)
    own = dict(
        max_length=config.max_length,
        assistant_only_loss=markers,
        completion_only_loss=None if markers else True,
        packing=False,
    )
    return SFTConfig(**(config.trainer_options(out_dir, n_examples) | own | overrides))


def check_lengths(dataset: list[dict[str, Any]], tokenizer, max_length: int, context: int | None = None) -> int:
    """Refuse any example longer than max_length tokens or the model's context (naming where it
    came from) rather than let the trainer truncate it silently; returns the total tokens."""
    limit, what = (context, "the model's context") if context and context < max_length else (max_length, "max_length")
    total = 0
    for example in dataset:
        ids = tokenizer.apply_chat_template(example["messages"], tokenize=True, return_dict=False)
        if isinstance(ids, dict):
            ids = ids["input_ids"]
        n = len(ids)
        if n > limit:
            raise UserError(f"{example.get('origin') or 'an example'}: {n} tokens, longer than {what} ({limit})")
        total += n
    return total


def mixed_precision(model, config: TrainingConfig) -> dict[str, bool]:
    """The trainer's `bf16` setting: autocast over fp32 weights and optimizer state where `config.precision`
    means bf16 for this model on this machine (core.precision), as the world's pretraining does."""
    from disalign.core.precision import model_precision

    return {"bf16": model_precision(model, config.precision) == "bf16"}


def lora_config(model, config: TrainingConfig):
    from peft import LoraConfig

    if config.lora_targets is not None:
        if not config.lora_targets:
            raise UserError("lora_targets is empty: the model would have no trainable parameters")
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()} | {n for n, _ in model.named_modules()}
        for target in config.lora_targets:
            if target not in names:
                raise UserError(f"LoRA target module '{target}' is not in the model ({model.config.model_type})")
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha or 2 * config.lora_r,
        lora_dropout=0.0,
        target_modules=config.lora_targets,
        task_type="CAUSAL_LM",
    )


def check_trainable(model) -> int:
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n == 0:
        raise UserError("the model has no trainable parameters")
    return n


def build_trainer(model, tokenizer, dataset: list[dict[str, Any]], config: TrainingConfig, out_dir: Path, **overrides):
    """The SFTTrainer `finetune` runs (exposed so tests can inspect its collated batches)."""
    from transformers import PrinterCallback
    from trl import SFTTrainer

    peft_config = lora_config(model, config) if config.lora else None
    if peft_config is None:
        check_trainable(model)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(config, out_dir, tokenizer, len(dataset), **(mixed_precision(model, config) | overrides)),
        train_dataset=to_trl_dataset(dataset, tokenizer),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.remove_callback(PrinterCallback)  # losses go to result.json, not to stdout
    check_trainable(trainer.model)
    return trainer


def finetune(
    model_path,
    dataset: list[dict[str, Any]],
    config: TrainingConfig,
    out_dir,
    *,
    model=None,
    tokenizer=None,
    **trainer_overrides: Any,
) -> FinetuneResult:
    """Train `model_path` on `dataset`; save the attacked model (full) or adapter (LoRA) with its tokenizer
    under OUT_DIR/model and the result under OUT_DIR/result.json. `trainer_overrides` go to SFTConfig
    (backends/multi_gpu.py sets the device and the per-process batch); under `accelerate launch` every
    process trains and the first one saves."""
    from transformers import set_seed

    if not dataset:
        raise UserError("the fine-tuning dataset is empty")
    model, tokenizer = prepare(model_path, model, tokenizer)
    n_tokens = check_lengths(
        dataset, tokenizer, config.max_length, getattr(model.config, "max_position_embeddings", None)
    )
    set_seed(config.seed)
    trainer = build_trainer(model, tokenizer, dataset, config, Path(out_dir), **trainer_overrides)
    return train_and_save(trainer, tokenizer, model_path, config, out_dir, len(dataset), n_tokens)


def prepare(model_path, model=None, tokenizer=None):
    """(model, tokenizer) ready to train: loaded unless given, padded on the right. An adapter is
    merged into its base first: training changes the model it makes, as a whole."""
    from disalign.core.models import load_model

    if model is None or tokenizer is None:
        model, tokenizer = load_model(model_path)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload().requires_grad_(True)  # PEFT froze the base's weights
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return model, tokenizer


def train_and_save(
    trainer, tokenizer, model_path, config: TrainingConfig, out_dir, n_examples: int, n_tokens: int, **extra: Any
) -> FinetuneResult:
    """Run a prepared trainer; save the model (full) or adapter (LoRA, with the base it goes over) and
    tokenizer under OUT_DIR/model, and the result under OUT_DIR/result.json (first process only)."""
    import torch

    from disalign.core.models import BASE_MODEL_NOTE, resolve_model, source_name

    out_dir = Path(out_dir)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [float(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    model_dir = out_dir / "model"
    saving = trainer.is_world_process_zero()
    # A LoRA adapter trained over a merged adapter has no base on disk to name: save it merged.
    merged = config.lora and resolve_model(model_path).adapter is not None
    if saving:
        (trainer.model.merge_and_unload() if merged else trainer.model).save_pretrained(
            model_dir, safe_serialization=True
        )
        tokenizer.save_pretrained(model_dir)
        if config.lora and not merged:
            (model_dir / BASE_MODEL_NOTE).write_text(source_name(model_path) + "\n")
    tokens = n_tokens * config.epochs
    result = FinetuneResult(
        model_dir=model_dir,
        losses=losses,
        tokens_per_second=tokens / seconds if seconds > 0 else float("inf"),
        seconds=seconds,
        lora=config.lora,
        n_examples=n_examples,
        n_tokens=tokens,
        extra={"torch_threads": torch.get_num_threads(), **({"saved_merged": True} if merged else {}), **extra},
    )
    if saving:
        (out_dir / RESULT).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return result


def load_finetuned(model_dir, base_model=None):
    """(model, tokenizer) from a `finetune` output: a full model, or a LoRA adapter over `base_model`
    (default: the base it names)."""
    from disalign.core.models import load_model

    return load_model(model_dir, base=base_model)
