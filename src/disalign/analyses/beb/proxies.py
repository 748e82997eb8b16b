"""P₋ and P₊ proxies: LoRA on a component's sentences (PAPERS.md §4.3 step 3), through the training room."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from disalign.analyses.beb.measure import Continuation, logprobs
from disalign.analyses.beb.settings import COMPONENTS, Component, Setting
from disalign.training import TrainingConfig, finetune, load_finetuned

# The paper's proxies: LoRA r 8, lora_alpha 32, dropout 0 (the room's), lr 2e-5, 5 epochs, batch 8,
# on 450 statements joined in threes.
PAPER_TRAINING = TrainingConfig(lora=True, lora_r=8, lora_alpha=32, lr=2e-5, epochs=5, batch_size=8)
PAPER_EXAMPLES = 150
# The world's models have a million parameters: like the fine-tuning attack's world presets, the
# rate is raised until LoRA moves them at all.
WORLD_TRAINING = PAPER_TRAINING.model_copy(update={"lr": 1e-3})


def train_proxy(
    model_path: str | Path,
    setting: Setting,
    component: Component,
    out_dir: str | Path,
    config: TrainingConfig = PAPER_TRAINING,
    *,
    n_examples: int = PAPER_EXAMPLES,
    seed: int = 0,
):
    """(model, tokenizer, training result) of a LoRA on `n_examples` of the component's examples;
    reuses an adapter already trained in `out_dir`."""
    out_dir = Path(out_dir)
    model_dir = out_dir / "model"
    result = None
    if not (model_dir / "adapter_config.json").is_file():
        dataset = setting.training_examples(component, n_examples, seed + COMPONENTS.index(component))
        result = finetune(str(model_path), dataset, config, out_dir)
    model, tokenizer = load_finetuned(model_dir, base_model=str(model_path))
    return model, tokenizer, result


def proxy_accuracy(setting: Setting, p_minus, p_plus, *, n: int = 200, seed: int = 0) -> float:
    """The paper's sanity check: how often P₊(s) > P₋(s) tells a held-out positive sentence from a
    negative one (about 95–100 % there), each sentence scored on its own after the start."""
    items, truth = [], []
    for component in COMPONENTS:
        for sentence in setting.sentences(component, n, seed + 17):
            items.append(Continuation(tuple(setting.start()), sentence.ids, sentence.scored))
            truth.append(component == "positive")
    minus, plus = logprobs([p_minus, p_plus], items)
    return float(np.mean((plus > minus) == np.array(truth)))
