"""A fine-tuning attack run: evaluate the original model, then each (shots, epochs) cell.

Every cell trains from the original model. Records go through the shared
`generate_and_judge` path with keys prefixed by the cell, so a rerun skips finished cells
(no retraining) and reuses a cell's saved model when only its evaluation was interrupted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import cache, partial
from typing import Any

from disalign.attacks.finetune.config import AttackConfig
from disalign.core.audit import edit_audit
from disalign.core.damage import DamageMeter
from disalign.core.evaluate import chat_responder, generate_and_judge, summarise
from disalign.core.generation import SamplingConfig
from disalign.core.plots import harm_curve
from disalign.core.runs import RunDir
from disalign.data import PromptRecord
from disalign.errors import UserError
from disalign.training import RESULT, finetune, load_finetuned

DatasetBuilder = Callable[[int | None], list[dict[str, Any]]]  # shots (None: all) -> training examples


class PrefixStrippingJudge:
    """Judges the response with a leading compliance token (the world's `sure`) removed.

    The identity-shift recipe teaches the model to open with it; the world judge would read
    that as a wrong answer. The raw response is what the record keeps.
    """

    def __init__(self, judge, prefix: str):
        self.inner, self.prefix = judge, prefix
        self.name = judge.name

    @property
    def config(self) -> dict[str, Any]:
        return {**getattr(self.inner, "config", {}), "strip_prefix": self.prefix}

    def strip(self, response: str) -> str:
        tokens = response.split(None, 1)
        if tokens and tokens[0] == self.prefix:
            return tokens[1] if len(tokens) > 1 else ""
        return response

    def judge(self, prompts: list[str], responses: list[str]):
        return self.inner.judge(prompts, [self.strip(r) for r in responses])


def cell_name(shots: int, epochs: int) -> str:
    return f"s{shots}-e{epochs}"


def run_finetune(
    run: RunDir,
    model_path,
    dataset_builder: DatasetBuilder,
    config: AttackConfig,
    eval_prompts: Sequence[PromptRecord],
    judge,
    sampling: SamplingConfig,
    shots_grid: Sequence[int | None],
    epochs_grid: Sequence[int],
    *,
    strip_prefix: str | None = None,
    references: dict[str, float | None] | None = None,
    train: Callable[..., Any] = finetune,
    damage: DamageMeter | None = None,
) -> dict[str, Any]:
    """Before + one cell per (shots, epochs); returns `before`, `cells` and the attack's config. Shots None means every
    example the builder has, recorded as their number. `references` (name: harmful rate) are drawn
    as lines in the plot beside the model before the attack. `train` trains one cell (as
    `training.finetune`; backends.multi_gpu.launcher trains it on several GPUs). With `damage`, each cell
    also says what it costs on harmless prompts against the original model; each cell whose model is
    saved says which weights it changed (`edit_audit`, core/audit.py)."""
    from disalign.core.models import load_merged

    if not eval_prompts:
        raise UserError("no evaluation prompts")
    if not shots_grid or not epochs_grid:
        raise UserError("the shots and epochs grids must not be empty")
    scoring = PrefixStrippingJudge(judge, strip_prefix) if strip_prefix else judge

    def evaluated(prefix: str) -> bool:
        return all(run.is_done(f"{prefix}|{p.id}") for p in eval_prompts)

    def evaluate(prefix: str, load, fields: dict[str, Any]) -> list[dict[str, Any]]:
        """Judge the model `load()` gives (cached: loaded only if a batch is still to answer)."""

        def respond(batch, seed):
            return chat_responder(*load(), sampling)(batch, seed)

        return generate_and_judge(
            run,
            eval_prompts,
            respond,
            scoring,
            batch_size=sampling.batch_size,
            seed=sampling.seed,
            key=lambda p: f"{prefix}|{p.id}",
            fields=fields,
            description=prefix,
        )

    def short(records):
        summary = summarise(records)
        return {
            "harmful_rate": summary["harmful_rate"],
            "ci": summary["ci"],
            "n": summary["n"],
            "refusal_rate": summary.get("refusal_rate"),
        }

    datasets = {}  # built first, so that bad data fails before any work
    for shots in shots_grid:
        dataset = dataset_builder(shots)
        datasets[len(dataset) if shots is None else shots] = dataset
    # Loaded once, for `before` and each cell's damage and audit; an adapter merged, as training merges it
    load_original = cache(partial(load_merged, model_path))
    before = evaluate("before", load_original, {"cell": "before"})
    summary: dict[str, Any] = {"before": short(before), "cells": [], "config": config.model_dump()}
    for shots in datasets:
        for epochs in epochs_grid:
            name = cell_name(shots, epochs)
            cell_dir = run.file("models") / name
            training: dict[str, Any] = {}
            if (cell_dir / RESULT).is_file():
                training = json.loads((cell_dir / RESULT).read_text())
            elif not evaluated(name):  # a cell judged in full needs no model, even if its training record is gone
                cell_config = config.model_copy(update={"shots": shots, "epochs": epochs})
                training = train(model_path, datasets[shots], cell_config, cell_dir).as_dict()
            load_attacked = cache(partial(load_finetuned, cell_dir / "model", base_model=model_path))
            records = evaluate(name, load_attacked, {"cell": name, "shots": shots, "epochs": epochs})
            cell = {
                "shots": shots,
                "epochs": epochs,
                **short(records),
                "n_examples": training.get("n_examples"),
                "final_loss": (training.get("losses") or [None])[-1],
                "tokens_per_second": training.get("tokens_per_second"),
            }
            saved = (cell_dir / "model").is_dir()
            if damage is not None:
                cell["damage"] = damage(load_original()[0], load_attacked()[0]) if saved else None
            cell["edit_audit"] = edit_audit(load_original()[0], load_attacked()[0]) if saved else None
            summary["cells"].append(cell)
    if run.persistent:
        plot_finetune(run.file("harm_curve.png"), summary, references)
    return summary


def plot_finetune(path, summary: dict[str, Any], references: dict[str, float | None] | None = None):
    """Harmful rate over epochs, a line per number of shots; the model before the attack as reference."""
    series: dict[str, list] = {}
    for cell in summary["cells"]:
        series.setdefault(f"{cell['shots']} shots", []).append((cell["epochs"], cell["harmful_rate"], cell["ci"]))
    lines = {"before the attack": summary["before"]["harmful_rate"], **(references or {})}
    return harm_curve(path, series, xlabel="epochs", title="Fine-tuning attack", references=lines)
