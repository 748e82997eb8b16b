"""The `disalign` command. Thin: parse options, call the Python API, report errors in one line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from disalign.core.progress import console
from disalign.errors import UserError

app = typer.Typer(
    help="Measure how easily a language model's safety alignment is undone, and explain why.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
world_app = typer.Typer(help="Build and evaluate the synthetic safety world and its model zoo.", no_args_is_help=True)
app.add_typer(world_app, name="world")

ConfigOption = Annotated[Optional[Path], typer.Option("--config", help="JSON file overriding world config keys.")]
QuickOption = Annotated[bool, typer.Option("--quick", help="Small, fast config (about a minute), for tests.")]


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run directory for the demo's results.")] = Path("runs/demo"),
    zoo: Annotated[Path, typer.Option(help="Zoo directory, built if missing and reused if present.")] = Path(
        "runs/zoo"
    ),
    config: ConfigOption = None,
    quick: QuickOption = False,
) -> None:
    """Build the zoo (or reuse it), evaluate every model and attack, print the tables."""
    from disalign.demo import run_demo
    from disalign.world import load_config

    run_demo(out, zoo, load_config(config, quick=quick))


@world_app.command("build")
def world_build(
    out: Annotated[Path, typer.Option(help="Zoo directory to create (or finish).")],
    config: ConfigOption = None,
    quick: QuickOption = False,
) -> None:
    """Pretrain the base model and align it three ways (sft, dpo, unlearn)."""
    from disalign.world import build_zoo, load_config

    build_zoo(out, load_config(config, quick=quick))


@world_app.command("eval")
def world_eval(
    world: Annotated[Path, typer.Option("--world", help="Zoo directory built by `disalign world build`.")],
    out: Annotated[Path, typer.Option(help="Run directory for records and summary.")],
    n: Annotated[Optional[int], typer.Option(help="Requests per prompt set (default: the zoo's).")] = None,
) -> None:
    """Evaluate every zoo model on safe, unsafe and jailbreak prompts with the exact judge."""
    from disalign.core.runs import RunDir
    from disalign.demo import models_table
    from disalign.world import load_world_config
    from disalign.world.evaluate import evaluate_zoo, sampling_for
    from disalign.world.spec import World

    config = load_world_config(world)
    count = n or config.eval.n
    if count < 1:
        raise UserError(f"--n must be at least 1, got {count}")
    sampling = sampling_for(World(config.world), config.eval)
    run = RunDir(out, "world eval", {"world": str(world.resolve()), "n": count})
    models = evaluate_zoo(world, run, count, sampling)
    run.write_summary({"models": models, "config": config.model_dump()})
    console.print(models_table(models))


WorldOption = Annotated[
    Optional[Path], typer.Option("--world", help="Zoo directory: enables world:<set> prompts and the world judge.")
]
JudgeOptions = Annotated[list[str], typer.Option("--judge-option", help="KEY=VALUE passed to the judge (repeatable).")]


def _judge(name: str, world: Optional[Path], options: list[str]):
    from disalign.judges import get_judge

    parsed: dict[str, object] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise UserError(f"--judge-option {option!r}: expected KEY=VALUE")
        parsed[key] = value
    if name == "world":
        if world is None:
            raise UserError("the world judge needs --world DIR")
        parsed["world"] = world
    return get_judge(name, **parsed)


def _sampling(max_new_tokens: int, temperature: float, top_p: float, batch_size: int, seed: int):
    from disalign.core.generation import SamplingConfig

    if max_new_tokens < 1 or batch_size < 1:
        raise UserError("--max-new-tokens and --batch-size must be at least 1")
    if temperature < 0 or not 0 < top_p <= 1:
        raise UserError("--temperature must be >= 0 and --top-p in (0, 1]")
    return SamplingConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, batch_size=batch_size, seed=seed
    )


def _prompts(source: str, world: Optional[Path], column: Optional[str], limit: Optional[int]):
    from disalign.data import load_prompts

    records = load_prompts(source, column=column, world=world)
    if not records:
        raise UserError(f"{source}: no usable prompts")
    return records[:limit] if limit else records


MaxNewTokens = Annotated[int, typer.Option(help="Most new tokens per response.")]
Temperature = Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")]
TopP = Annotated[float, typer.Option(help="Nucleus sampling mass.")]
BatchSize = Annotated[int, typer.Option(help="Prompts per batch.")]
Seed = Annotated[int, typer.Option(help="Sampling seed.")]
Limit = Annotated[Optional[int], typer.Option(help="Use only the first N prompts.")]
Column = Annotated[Optional[str], typer.Option(help="Prompt column of a CSV/JSONL file.")]


@app.command("eval")
def eval_(
    model: Annotated[str, typer.Option(help="Model: HF directory, .gguf file or 'smollm2'.")],
    prompts: Annotated[str, typer.Option(help="Prompt source: file, folder, named set or world:<set>.")],
    judge: Annotated[str, typer.Option(help="Judge name: keyword, refusal, rubric, classifier, world.")],
    out: Annotated[Path, typer.Option(help="Run directory.")],
    world: WorldOption = None,
    judge_option: JudgeOptions = [],
    column: Column = None,
    limit: Limit = None,
    max_new_tokens: MaxNewTokens = 64,
    temperature: Temperature = 1.0,
    top_p: TopP = 1.0,
    batch_size: BatchSize = 16,
    seed: Seed = 0,
) -> None:
    """Generate responses with a model's chat template, judge them, summarise harm."""
    from disalign.core.evaluate import chat_responder, generate_and_judge, summarise
    from disalign.core.models import load_model
    from disalign.core.runs import RunDir
    from disalign.judges.validate import judge_fields

    sampling = _sampling(max_new_tokens, temperature, top_p, batch_size, seed)
    records = _prompts(prompts, world, column, limit)
    the_judge = _judge(judge, world, judge_option)
    run = RunDir(
        out,
        "eval",
        {"model": model, "prompts": prompts, "judge": the_judge.config, "sampling": sampling.__dict__, "limit": limit},
    )
    lm, tokenizer = load_model(model)
    done = generate_and_judge(
        run, records, chat_responder(lm, tokenizer, sampling), the_judge, batch_size=batch_size, key=lambda p: p.id
    )
    summary = {**summarise(done, seed), **judge_fields(the_judge), "model": model, "prompts": prompts}
    run.write_summary(summary)
    _print_rate(summary)


@app.command("judge")
def judge_(
    responses: Annotated[Path, typer.Option(help="JSONL or CSV with 'prompt' and 'response'.")],
    judge: Annotated[str, typer.Option(help="Judge name.")],
    out: Annotated[Path, typer.Option(help="Run directory.")],
    world: WorldOption = None,
    judge_option: JudgeOptions = [],
    label_field: Annotated[Optional[str], typer.Option(help="Column holding a human label (true/false).")] = None,
    label_kind: Annotated[str, typer.Option(help="What the label means: refused or harmful.")] = "harmful",
) -> None:
    """Judge existing responses; with --label-field, also measure the judge against the labels."""
    from disalign.judges.validate import judge_file

    summary = judge_file(
        responses, _judge(judge, world, judge_option), out, label_field=label_field, label_kind=label_kind
    )
    _print_rate(summary)


@app.command("ed")
def ed(
    base: Annotated[str, typer.Option(help="Base (unaligned) model.")],
    aligned: Annotated[str, typer.Option(help="Aligned model sharing the base's vocabulary.")],
    prompts: Annotated[str, typer.Option(help="Prompt source: file, named set or world:<set>.")],
    out: Annotated[Path, typer.Option(help="Run directory.")],
    alpha: Annotated[list[str], typer.Option(help="Disalignment strength; repeat or comma-separate for a grid.")] = [
        "0.3"
    ],
    baselines: Annotated[bool, typer.Option(help="Also run BaseMP, AlignMP and EDBase.")] = False,
    judge: Annotated[str, typer.Option(help="Judge name.")] = "keyword",
    seeds: Annotated[int, typer.Option(help="Sampling seeds per cell.")] = 1,
    world: WorldOption = None,
    judge_option: JudgeOptions = [],
    column: Column = None,
    limit: Limit = None,
    max_new_tokens: MaxNewTokens = 64,
    temperature: Temperature = 1.0,
    top_p: TopP = 1.0,
    batch_size: BatchSize = 16,
    seed: Seed = 0,
) -> None:
    """Emulated disalignment: sample from (1+α)·z_base − α·z_aligned, judged, over an α grid."""
    from disalign.attacks.emulated import chat_format
    from disalign.attacks.emulated.run import EDPair, grid, run_ed
    from disalign.core.models import load_model
    from disalign.core.runs import RunDir

    try:
        alphas = [float(a) for value in alpha for a in value.split(",") if a.strip()]
    except ValueError:
        raise UserError(f"--alpha {alpha}: not a number") from None
    if seeds < 1:
        raise UserError("--seeds must be at least 1")
    cells = grid(alphas, baselines)
    sampling = _sampling(max_new_tokens, temperature, top_p, batch_size, seed)
    records = _prompts(prompts, world, column, limit)
    the_judge = _judge(judge, world, judge_option)
    config = {
        "base": base,
        "aligned": aligned,
        "prompts": prompts,
        "cells": cells,
        "seeds": seeds,
        "judge": the_judge.config,
        "sampling": sampling.__dict__,
        "limit": limit,
    }
    run = RunDir(out, "ed", config)
    base_model, tokenizer = load_model(base)
    aligned_model, aligned_tokenizer = load_model(aligned)
    # World models are chat models on both sides; a real base model gets the URIAL template.
    formats = (chat_format(tokenizer), chat_format(aligned_tokenizer)) if world else (None, None)
    pair = EDPair(base_model, aligned_model, (tokenizer, aligned_tokenizer), *formats)
    summary = run_ed(run, pair, records, cells, the_judge, sampling, seeds)
    for row in summary["results"]:
        console.print(
            f"{row['method']:9s} α={row['alpha']:<5g} harmful {row['harmful_rate']:.1%}  CI {row['ci']}  n={row['n']}"
        )


def _grid(values: list[str], option: str, allow_all: bool = False) -> list[int | None]:
    """Comma-separated or repeated whole numbers; `all` (None) where the option allows it."""
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    numbers: list[int | None] = []
    for item in items:
        if allow_all and item == "all":
            numbers.append(None)
        elif item.isdigit() and int(item) >= 1:
            numbers.append(int(item))
        else:
            raise UserError(f"{option} {item}: expected a whole number of at least 1{' or all' if allow_all else ''}")
    if not numbers:
        raise UserError(f"{option}: no values given")
    return numbers


@app.command()
def finetune(
    model: Annotated[str, typer.Option(help="Aligned model to attack: HF directory, .gguf file or 'smollm2'.")],
    recipe: Annotated[str, typer.Option(help="harmful (tier 1), identity (tier 2, AOA) or benign (tier 3).")],
    out: Annotated[Path, typer.Option(help="Run directory: attacked models under models/, records, summary.")],
    data: Annotated[
        Optional[Path], typer.Option(help="Training file: JSONL/JSON/CSV pairs; Alpaca JSON or Dolly JSONL for benign.")
    ] = None,
    prompts: Annotated[
        Optional[str], typer.Option(help="Evaluation prompt source (default with --world: world:unsafe).")
    ] = None,
    judge: Annotated[
        Optional[str], typer.Option(help="Judge name (default: world with --world, else keyword).")
    ] = None,
    shots: Annotated[
        list[str], typer.Option(help="Training examples, or 'all'; repeat or comma-separate for a grid.")
    ] = [],
    epochs: Annotated[list[str], typer.Option(help="Epochs; repeat or comma-separate for a grid.")] = [],
    lora: Annotated[bool, typer.Option(help="Train a LoRA adapter instead of every weight.")] = False,
    lora_target: Annotated[
        list[str], typer.Option(help="LoRA target module name (repeatable; default: peft's for the architecture).")
    ] = [],
    lora_r: Annotated[Optional[int], typer.Option(help="LoRA rank.")] = None,
    mix_safety: Annotated[
        int, typer.Option(help="Refusal examples mixed into the training data (the paper's mitigation).")
    ] = 0,
    safety_data: Annotated[
        Optional[Path], typer.Option(help="File of (harmful instruction, refusal) pairs for --mix-safety.")
    ] = None,
    keep_safety: Annotated[bool, typer.Option(help="Benign recipe: keep examples whose answer refuses.")] = False,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate (default: the recipe's preset).")] = None,
    train_batch_size: Annotated[
        Optional[int], typer.Option(help="Training batch size (default: the preset's).")
    ] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Longest training example in tokens.")] = None,
    world: WorldOption = None,
    judge_option: JudgeOptions = [],
    column: Column = None,
    limit: Limit = None,
    max_new_tokens: MaxNewTokens = 64,
    temperature: Temperature = 1.0,
    top_p: TopP = 1.0,
    batch_size: BatchSize = 16,
    seed: Annotated[int, typer.Option(help="Training and sampling seed.")] = 42,
) -> None:
    """Fine-tuning attack: train on harmful, identity-shifting or benign data over a shots × epochs grid,
    judging the model before and after each cell."""
    from disalign.attacks.finetune import identity_prompts, preset_config, recipe_dataset, run_finetune
    from disalign.core.runs import RunDir
    from disalign.world import load_world
    from disalign.world.spec import COMPLIANCE_PREFIX

    the_world = load_world(world) if world else None
    config = preset_config(
        recipe,
        world=the_world is not None,
        lr=lr,
        batch_size=train_batch_size,
        max_length=max_length,
        seed=seed,
        lora=lora,
        lora_r=lora_r,
        lora_targets=lora_target or None,
        mix_safety=mix_safety,
        drop_safety=not keep_safety,
    )
    shots_grid = _grid(shots, "--shots", allow_all=the_world is None) if shots else [config.shots]
    epochs_grid = _grid(epochs, "--epochs") if epochs else [config.epochs]
    source = prompts or ("world:unsafe" if world else None)
    if source is None:
        raise UserError("--prompts SOURCE is needed to evaluate the attack (or --world DIR for world:unsafe)")
    records = _prompts(source, world, column, limit)
    if recipe == "identity":
        records = identity_prompts(records, world=the_world is not None)
    the_judge = _judge(judge or ("world" if world else "keyword"), world, judge_option)
    sampling = _sampling(max_new_tokens, temperature, top_p, batch_size, seed)
    run = RunDir(
        out,
        "finetune",
        {
            "model": model,
            "data": str(data) if data else None,
            "prompts": source,
            "judge": the_judge.config,
            "finetune": config.model_dump(),
            "shots": shots_grid,
            "epochs": epochs_grid,
            "sampling": sampling.__dict__,
            "limit": limit,
            "world": str(world) if world else None,
        },
    )
    summary = run_finetune(
        run,
        model,
        lambda n: recipe_dataset(config, n, world=the_world, data=data, safety_data=safety_data),
        config,
        records,
        the_judge,
        sampling,
        shots_grid,
        epochs_grid,
        strip_prefix=COMPLIANCE_PREFIX if the_world is not None else None,
    )
    before = summary["before"]
    console.print(f"before    harmful {before['harmful_rate']:.1%}  CI {before['ci']}  n={before['n']}")
    for cell in summary["cells"]:
        console.print(
            f"shots={cell['shots']:<4d} epochs={cell['epochs']:<3d} "
            f"harmful {cell['harmful_rate']:.1%}  CI {cell['ci']}  n={cell['n']}"
        )


def _print_rate(summary: dict) -> None:
    rate = summary.get("harmful_rate")
    console.print(
        f"harmful rate {rate if rate is None else f'{rate:.1%}'}  CI {summary.get('ci')}  n={summary.get('n')}"
    )


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets.utils.logging import disable_progress_bar as disable_datasets_progress
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_datasets_progress()
    try:
        app()
    except UserError as err:
        print(f"disalign: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            "disalign: interrupted; everything already written is kept, rerun with the same --out to continue",
            file=sys.stderr,
        )
        sys.exit(130)
