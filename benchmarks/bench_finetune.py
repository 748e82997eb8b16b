"""Training throughput of `disalign.attacks.finetune.finetune` against a plain TRL SFTTrainer.

Same model (a small Llama on the world tokenizer), same data, same hyperparameters and loss
masking; both time `trainer.train()` only and count the same tokens (every token of every
example, times epochs). "plain" is SFTTrainer given the settings our path gives it (fp32, no
gradient checkpointing): the overhead check, goal ratio finetune / plain >= 0.95. "TRL defaults"
is SFTTrainer as it comes (bf16, emulated on CPU, and gradient checkpointing), for reference.
Runs are alternated and the median of each is reported. Then the wall time of a whole synthetic
tier-1 attack (10 harmful examples x 5 epochs on the zoo's sft model, evaluated before and after), on the zoo given by
--zoo (`make demo` leaves one in runs/zoo), or on a --quick zoo built first. One JSON object on
the last line.

    .venv/bin/python benchmarks/bench_finetune.py [--repeats 3] [--threads 1] [--zoo runs/zoo]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def setup(n_examples: int, hidden: int, layers: int):
    """The world tokenizer, a maker of identically initialised models, and tier-1 world data."""
    from disalign.world import World, make_config
    from disalign.world.config import ModelShape
    from disalign.world.model import build_model, build_tokenizer
    from disalign.world.recipes import WorldRecipes

    world = World(make_config(quick=True).world)
    shape = ModelShape(d_model=hidden, n_layers=layers, d_mlp=4 * hidden, context=128)
    data = WorldRecipes(world).dataset("harmful", n_examples, seed=0)
    return build_tokenizer(world), lambda: build_model(world, shape, seed=0), data


def run_disalign(tokenizer, make_model, data, ft_config, out) -> float:
    from disalign.attacks.finetune import finetune

    result = finetune("bench", data, ft_config, out, model=make_model(), tokenizer=tokenizer)
    return result.n_tokens / result.seconds


def run_plain(tokenizer, make_model, data, ft_config, out, **settings) -> float:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from disalign.training.sft import check_lengths

    trainer = SFTTrainer(
        model=make_model(),
        args=SFTConfig(
            output_dir=str(out),
            num_train_epochs=ft_config.epochs,
            learning_rate=ft_config.lr,
            per_device_train_batch_size=ft_config.batch_size,
            max_length=ft_config.max_length,
            assistant_only_loss=True,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            seed=ft_config.seed,
            disable_tqdm=True,
            **settings,
        ),
        train_dataset=Dataset.from_list([{"messages": e["messages"]} for e in data]),
        processing_class=tokenizer,
    )
    n_tokens = check_lengths(data, tokenizer, ft_config.max_length) * ft_config.epochs
    start = time.perf_counter()
    trainer.train()
    return n_tokens / (time.perf_counter() - start)


def tier1_attack(zoo: Path | None, workdir: Path) -> dict:
    """The world's tier-1 attack (10 harmful examples, 5 epochs) on the SFT model, as a user runs it."""
    import disalign
    from disalign.world import build_zoo, make_config

    if zoo is None:
        zoo = workdir / "zoo"
        build_zoo(zoo, make_config(quick=True))
    start = time.perf_counter()
    result = disalign.finetune(
        model=str(zoo / "sft"), recipe="harmful", shots=[10], epochs=[5], world=zoo, judge="world", damage_n=0
    ).to_json()
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "zoo": str(zoo),
        "harmful_before": result["before"]["harmful_rate"],
        "harmful_after": result["cells"][0]["harmful_rate"],
        "n": result["before"]["n"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--zoo", type=Path, default=None, help="zoo for the tier-1 timing (default: build a quick one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from datasets.utils.logging import disable_progress_bar
    from transformers.utils import logging as hf_logging

    from disalign.attacks.finetune import AttackConfig

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    disable_progress_bar()
    tokenizer, make_model, data = setup(args.examples, args.hidden, args.layers)
    ft_config = AttackConfig(epochs=args.epochs, lr=5e-5, batch_size=10, max_length=64, seed=42)
    ours, plain, defaults = [], [], []
    same = {"bf16": False, "fp16": False, "activation_checkpointing": ft_config.gradient_checkpointing}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            run = (tokenizer, make_model, data, ft_config)
            plain.append(run_plain(*run, Path(tmp) / f"plain{i}", **same))
            ours.append(run_disalign(*run, Path(tmp) / f"ours{i}"))
            defaults.append(run_plain(*run, Path(tmp) / f"defaults{i}"))
            print(
                f"repeat {i}: finetune {ours[-1]:.0f} tok/s, plain SFTTrainer {plain[-1]:.0f} tok/s, "
                f"SFTTrainer with TRL defaults {defaults[-1]:.0f} tok/s",
                flush=True,
            )
        attack = tier1_attack(args.zoo, Path(tmp))
        print(f"tier-1 world attack: {attack['seconds']} s", flush=True)
    a, b = statistics.median(ours), statistics.median(plain)
    print(
        json.dumps(
            {
                "benchmark": "finetune_training_throughput",
                "finetune_tokens_per_s": round(a, 1),
                "plain_sft_tokens_per_s": round(b, 1),
                "trl_defaults_tokens_per_s": round(statistics.median(defaults), 1),
                "ratio": round(a / b, 3),
                "goal_ratio": 0.95,
                "meets_goal": a / b >= 0.95,
                "repeats": args.repeats,
                "threads": args.threads,
                "examples": args.examples,
                "epochs": args.epochs,
                "model": {"hidden": args.hidden, "layers": args.layers},
                "tier1_world_attack": attack,
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
