"""World pretraining before and after issue 16, and the demo's wall time, on this machine in one run.

    pretrain  the base model of the default zoo pretrained twice: with the pinned pre-issue-16
              settings (LEGACY: whole documents padded into rows, 700 steps) and with today's
              default; tokens/s counts real (non-padding) tokens. Goal: ratio of seconds >= 2.
    quick     the --quick demo: zoo build (goal <= 60 s) and every section
    default   the default demo (goal <= 600 s on 2 cores)

`python benchmarks/bench_world.py [pretrain] [quick] [default]` (all three by default).
Prints one line per measurement and a JSON object on the last line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from disalign.api.demo import DemoConfig, demo  # noqa: E402
from disalign.world import World, WorldConfig, make_config  # noqa: E402
from disalign.world.model import build_model  # noqa: E402
from disalign.world.train import pretrain  # noqa: E402

# The default world's pretraining as it was before issue 16 (README: 256 s at 8.3k tokens/s).
LEGACY = {
    "model": {"d_model": 128, "n_layers": 4, "n_heads": 4, "d_mlp": 384, "context": 192},
    "train": {
        "pretrain_steps": 700,
        "pretrain_batch": 32,
        "pretrain_length": 128,
        "pretrain_lr": 3e-3,
        "pretrain_packing": "documents",
    },
}


def measure_pretraining(config: WorldConfig) -> dict:
    torch.set_num_threads(config.train.threads)
    world = World(config.world)
    model = build_model(world, config.model, config.world.seed)
    stats = pretrain(model, world, config.train, config.world.seed).as_dict()
    return {key: stats[key] for key in ("steps", "tokens", "seconds", "tokens_per_second", "final_loss")}


def compare_pretraining() -> dict:
    before = measure_pretraining(make_config(LEGACY))
    after = measure_pretraining(make_config())
    return {
        "before": before,
        "after": after,
        "speedup": round(before["seconds"] / after["seconds"], 2),
        "tokens_per_second_ratio": round(after["tokens_per_second"] / before["tokens_per_second"], 2),
    }


def measure_demo(quick: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = demo(DemoConfig(out=Path(tmp) / "demo", zoo=Path(tmp) / "zoo", quick=quick))
        seconds = time.perf_counter() - start
        training = json.loads((Path(tmp) / "zoo" / "summary.json").read_text())["training"]
    return {
        "seconds": round(seconds, 1),
        "section_seconds": result.section_seconds,
        "pretrain_tokens_per_s": training["base"]["tokens_per_second"],
        "pretrain_seconds": training["base"]["seconds"],
        "align_seconds": {m: training[m]["seconds"] for m in ("sft", "dpo", "unlearn")},
        "base_unsafe_harmful_rate": result.models["base"]["unsafe"]["harmful_rate"],
    }


def main() -> None:
    names = sys.argv[1:] or ["pretrain", "quick", "default"]
    results: dict[str, dict] = {}
    for name in names:
        if name == "pretrain":
            results[name] = compare_pretraining()
            before, after = results[name]["before"], results[name]["after"]
            print(
                f"pretrain: before {before['seconds']} s at {before['tokens_per_second']:.0f} tokens/s, "
                f"after {after['seconds']} s at {after['tokens_per_second']:.0f} tokens/s, "
                f"{results[name]['speedup']}x faster"
            )
        else:
            results[name] = measure_demo(quick=name == "quick")
            print(
                f"{name} demo: {results[name]['seconds']} s (zoo {results[name]['section_seconds']['zoo']} s), "
                f"pretraining {results[name]['pretrain_tokens_per_s']:.0f} tokens/s"
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
