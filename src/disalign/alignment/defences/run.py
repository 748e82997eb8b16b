"""Defend a causal LM: build the data, train with the defence, save a model or an adapter."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from disalign.alignment.defences.base import Defence
from disalign.alignment.defences.data import defence_data
from disalign.alignment.defences.trainer import train_defence
from disalign.alignment.refusals import REFUSALS, read_refusals
from disalign.data import PromptRecord
from disalign.training import RESULT, FinetuneResult

DATA = "defence_data.jsonl"


def run_defend(
    model_path,
    defence: Defence,
    harmful: Sequence[PromptRecord],
    benign: Sequence[PromptRecord],
    out_dir,
    *,
    refusals: Sequence[str] | None = None,
    judge=None,
    batch_size: int = 16,
) -> FinetuneResult:
    """Train `model_path` with `defence`; the model (full) or adapter (LoRA) goes to OUT_DIR/model,
    loadable by `disalign.core.models.load_model`, what it trained on to OUT_DIR/defence_data.jsonl
    and the result to OUT_DIR/result.json. `refusals` replace the settings' (a world's own refusal);
    `judge` finds refusals among the model's own answers (default: `keyword`)."""
    from disalign.core.models import load_model
    from disalign.judges import get_judge

    settings = defence.settings
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model(model_path)
    if refusals is None:
        refusals = read_refusals(settings.refusals) if settings.refusals else REFUSALS
    data = defence_data(
        model,
        tokenizer,
        harmful,
        benign,
        settings,
        refusals=refusals,
        judge=judge or get_judge("keyword"),
        harmful_answers=defence.needs_harmful_answers,
        batch_size=batch_size,
    )
    with (out_dir / DATA).open("w", encoding="utf-8") as handle:
        for role, rows in (("harmful", data.harmful), ("benign", data.benign)):
            handle.writelines(json.dumps({"role": role, **vars(row)}) + "\n" for row in rows)
    result = train_defence(model_path, defence, data, out_dir, model=model, tokenizer=tokenizer)
    result.extra.update({"method": defence.name, "data": data.counts})
    (out_dir / RESULT).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return result
