"""The `disalign` command. Thin: parse options, call the Python API, report errors in one line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

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
    zoo: Annotated[Path, typer.Option(help="Zoo directory, built if missing and reused if present.")] = Path("runs/zoo"),
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
    from disalign.core.progress import console
    from disalign.core.runs import RunDir
    from disalign.demo import models_table
    from disalign.world import load_world_config
    from disalign.world.evaluate import evaluate_zoo, sampling_for
    from disalign.world.spec import World

    config = load_world_config(world)
    count = n or config.eval.n
    if count < 1:
        raise UserError(f"--n must be at least 1, got {count}")
    sampling = sampling_for(World(config.world), config.eval.temperature, config.eval.batch, config.eval.seed)
    run = RunDir(out, "world eval", {"world": str(world.resolve()), "n": count})
    models = evaluate_zoo(world, run, count, sampling)
    run.write_summary({"models": models, "config": config.model_dump()})
    console.print(models_table(models))


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        app()
    except UserError as err:
        print(f"disalign: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("disalign: interrupted; everything already written is kept, rerun with the same --out to continue", file=sys.stderr)
        sys.exit(130)
