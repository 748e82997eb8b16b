"""The world's verbs, registered like every other: `world build` and `world eval`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pydantic import Field

from disalign.core.options import Options, RunOptions
from disalign.core.verbs import verb
from disalign.errors import DisalignWarning
from disalign.results import RunResult
from disalign.world.config import WorldConfig, make_config


class WorldSettings(Options):
    """Which world: the default or the quick one, with any of its config sections overridden."""

    quick: bool = Field(False, description="Small, fast world and model (about a minute to build), for tests.")
    world: dict[str, Any] = Field(default_factory=dict, description="World spec overrides (KEY=VALUE).")
    model: dict[str, Any] = Field(default_factory=dict, description="Model shape overrides (KEY=VALUE).")
    train: dict[str, Any] = Field(default_factory=dict, description="Training overrides (KEY=VALUE).")
    eval: dict[str, Any] = Field(default_factory=dict, description="Evaluation overrides (KEY=VALUE).")

    def world_config(self) -> WorldConfig:
        overrides = {"world": self.world, "model": self.model, "train": self.train, "eval": self.eval}
        return make_config({key: value for key, value in overrides.items() if value}, quick=self.quick)


class BuildConfig(WorldSettings):
    out: Path = Field(description="Zoo directory to create (or finish).")
    rebuild: bool = Field(False, description="Rebuild a zoo whose config differs from this one.")


@verb("world build", BuildConfig)
def build(config: BuildConfig) -> RunResult:
    """Pretrain the base model and align it three ways (sft, dpo, unlearn)."""
    from disalign.world.zoo import ZOO_MODELS, build_zoo

    stats = build_zoo(config.out, config.world_config(), rebuild=config.rebuild)
    models = {name: {"path": str(config.out / name), "training": stats.get(name)} for name in ZOO_MODELS}
    return RunResult(command="world build", models=models)


class ZooEvalConfig(RunOptions):
    world: Path = Field(description="Zoo directory built by `disalign world build`.")
    n: int | None = Field(None, ge=1, description="Requests per prompt set (default: the zoo's).")


@verb("world eval", ZooEvalConfig)
def eval(config: ZooEvalConfig) -> RunResult:  # noqa: A001  (the verb's name, as on the command line)
    """Evaluate every zoo model on safe, unsafe and jailbreak prompts with the exact judge."""
    from disalign.core.runs import RunDir, fingerprint_path
    from disalign.judges import get_judge
    from disalign.judges.validate import judge_fields
    from disalign.world.evaluate import evaluate_zoo, missed_levels, result_rows, sampling_for
    from disalign.world.zoo import load_world, load_world_config

    zoo_config = load_world_config(config.world)
    count = config.n or zoo_config.eval.n
    world = load_world(config.world)
    run = RunDir(
        config.out,
        "world eval",
        {"n": count},
        inputs={"zoo": fingerprint_path(config.world)},
        input_paths=[config.world],
        overwrite=config.overwrite,
    )
    models = evaluate_zoo(config.world, run, count, sampling_for(world, zoo_config.eval))
    for miss in missed_levels(models):
        warnings.warn(f"{config.world}: {miss}", DisalignWarning, stacklevel=2)
    result = RunResult(
        command="world eval",
        models=models,
        results=result_rows(models),
        **judge_fields(get_judge("world", world=world)),
        config=zoo_config.model_dump(),
    )
    run.write_summary(result.to_json())
    return result
