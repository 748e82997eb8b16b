"""One training loop for every defence: plain PyTorch over the defence's rows, full or LoRA.

The schedule is the synthetic world's safety tuning (AdamW with β = (0.9, 0.95), 5 % linear warm-up,
then cosine down to a tenth of the peak, gradients clipped at norm 1), so in the world a defended
model and the zoo's `sft` model differ by the defence alone. What a defence changes it does through
its `Defence` hooks: its rows, the forward pass, or the gradient.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from disalign.alignment.defences.base import Defence
from disalign.alignment.defences.data import DefenceData, check_lengths, collate
from disalign.core.progress import progress_bar
from disalign.training import RESULT, FinetuneResult
from disalign.training.sft import check_trainable, lora_config, prepare

WARMUP_SHARE = 0.05
FLOOR = 0.1


def learning_rate(step: int, total: int, peak: float) -> float:
    warmup = max(1, round(total * WARMUP_SHARE))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_defence(model_path, defence: Defence, data: DefenceData, out_dir, *, model=None, tokenizer=None):
    """Train `model_path` with `defence` on `data`; the model (full) or adapter (LoRA) goes to
    OUT_DIR/model as `align` saves it, the result to OUT_DIR/result.json."""
    import copy

    from peft import get_peft_model

    settings = defence.settings
    out_dir = Path(out_dir)
    model, tokenizer = prepare(model_path, model, tokenizer)
    rng = np.random.default_rng([settings.seed, 29])
    torch.manual_seed(settings.seed)
    rows = defence.rows(data, tokenizer, rng)
    context = getattr(model.config, "max_position_embeddings", None) or settings.max_length
    check_lengths(rows, min(settings.max_length, context))
    reference = copy.deepcopy(model).eval().requires_grad_(False) if defence.needs_reference else None
    defence.prepare(model, tokenizer, data, reference)
    if settings.lora:
        model = get_peft_model(model, lora_config(model, settings))
    check_trainable(model)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, betas=(0.9, 0.95), weight_decay=settings.weight_decay)
    batch_size = min(settings.batch_size, len(rows))
    per_epoch = math.ceil(len(rows) / batch_size)
    total = per_epoch * settings.epochs
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    losses: list[float] = []
    n_tokens = 0
    model.train()
    start = time.perf_counter()
    with progress_bar(f"defend {defence.name}", total) as advance:
        for epoch in range(settings.epochs):
            order = np.random.default_rng([settings.seed, 15485863, epoch]).permutation(len(rows))
            for index in range(per_epoch):
                step = epoch * per_epoch + index
                batch = collate([rows[i] for i in order[index * batch_size : (index + 1) * batch_size]], pad)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, total, settings.lr)
                optimizer.zero_grad(set_to_none=True)
                loss = defence.backward(model, batch, step)
                torch.nn.utils.clip_grad_norm_(parameters, 1.0)
                optimizer.step()
                losses.append(float(loss))
                n_tokens += int(batch["mask"].sum())
                advance(loss=losses[-1])
    seconds = time.perf_counter() - start
    model.eval()
    model_dir = _save(model, tokenizer, model_path, settings.lora, out_dir)
    result = FinetuneResult(
        model_dir=model_dir,
        losses=losses,
        tokens_per_second=n_tokens / seconds if seconds > 0 else float("inf"),
        seconds=seconds,
        lora=settings.lora,
        n_examples=len(rows),
        n_tokens=n_tokens,
        extra={"torch_threads": torch.get_num_threads(), "steps": total, **defence.summary()},
    )
    (out_dir / RESULT).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return result


def _save(model, tokenizer, model_path, lora: bool, out_dir: Path) -> Path:
    """As `align` saves: the full model, or the adapter with a note naming its base; an adapter trained
    over a merged adapter has no base on disk to name, so it is saved merged."""
    from disalign.core.models import BASE_MODEL_NOTE, resolve_model, source_name

    model_dir = out_dir / "model"
    merged = lora and resolve_model(model_path).adapter is not None
    (model.merge_and_unload() if merged else model).save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    if lora and not merged:
        (model_dir / BASE_MODEL_NOTE).write_text(source_name(model_path) + "\n")
    return model_dir
