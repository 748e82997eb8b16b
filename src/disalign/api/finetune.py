"""`disalign finetune`: the fine-tuning attacks of Qi et al. over a shots × epochs grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from disalign.api.common import (
    DamageOptions,
    damage_meter,
    finish,
    judge_of,
    model_info,
    open_run,
    prompts_fingerprint,
    prompts_of,
)
from disalign.core.options import CommaSeparated, JudgeOptions, PromptOptions, RunOptions, SamplingOptions, Seed
from disalign.core.runs import fingerprint_path
from disalign.core.verbs import verb
from disalign.errors import UserError
from disalign.results import RunResult


class FinetuneConfig(PromptOptions, JudgeOptions, SamplingOptions, DamageOptions, RunOptions):
    model: str = Field(description="Aligned model to attack: HF directory, adapter directory, .gguf file or 'smollm2'.")
    recipe: Literal["harmful", "identity", "benign"] = Field(
        description="harmful (tier 1), identity (tier 2, AOA) or benign (tier 3)."
    )
    data: Path | None = Field(None, description="Training file: JSONL/JSON/CSV pairs; Alpaca JSON or Dolly JSONL.")
    shots: Annotated[list[int | Literal["all"]], CommaSeparated] = Field(
        default_factory=list, description="Training examples, or 'all'; comma-separate for a grid (default: preset)."
    )
    epochs: Annotated[list[int], CommaSeparated] = Field(
        default_factory=list, description="Epochs; comma-separate for a grid (default: preset)."
    )
    lora: bool = Field(False, description="Train a LoRA adapter instead of every weight.")
    lora_target: Annotated[list[str], CommaSeparated] = Field(
        default_factory=list, description="LoRA target module name (repeatable; default: peft's for the architecture)."
    )
    lora_r: int | None = Field(None, ge=1, description="LoRA rank.")
    mix_safety: int = Field(0, ge=0, description="Refusal examples mixed into the training data (the mitigation).")
    safety_data: Path | None = Field(None, description="File of (harmful instruction, refusal) pairs for --mix-safety.")
    keep_safety: bool = Field(False, description="Benign recipe: keep examples whose answer refuses.")
    lr: float | None = Field(None, gt=0, description="Learning rate (default: the recipe's preset).")
    train_batch_size: int | None = Field(None, ge=1, description="Training batch size (default: the preset's).")
    max_length: int | None = Field(None, ge=2, description="Longest training example in tokens.")
    train_seed: Seed = Field(42, description="Training seed (the paper's official code uses 42).")
    accelerate_config: Path | None = Field(
        None, description="accelerate YAML: train each cell on several GPUs (src/disalign/backends/configs/)."
    )

    @field_validator("shots", "epochs")
    @classmethod
    def _positive(cls, values):
        if any(value != "all" and value < 1 for value in values):
            raise ValueError("every value must be at least 1")
        return values


@verb("finetune", FinetuneConfig)
def finetune(config: FinetuneConfig) -> RunResult:
    """Fine-tuning attack: train on harmful, identity-shifting or benign data over a shots × epochs grid,
    judging the model before and after each cell."""
    from disalign.attacks.finetune import identity_prompts, preset_config, recipe_dataset, run_finetune
    from disalign.backends.multi_gpu import launcher
    from disalign.core.models import load_source_tokenizer
    from disalign.judges.validate import judge_fields

    multi_gpu = {"train": launcher(config.accelerate_config)} if config.accelerate_config else {}
    source = _world_recipes(config.world)
    attack = preset_config(
        config.recipe,
        world=source is not None,
        lr=config.lr,
        batch_size=config.train_batch_size,
        max_length=config.max_length,
        seed=config.train_seed,
        precision=config.precision,
        lora=config.lora,
        lora_r=config.lora_r,
        lora_targets=config.lora_target or None,
        mix_safety=config.mix_safety,
        drop_safety=not config.keep_safety,
    )
    if source is not None and "all" in config.shots:
        raise UserError("shots: 'all' needs a data file; with --world give numbers of shots")
    shots_grid = [None if s == "all" else s for s in config.shots] or [attack.shots]
    epochs_grid = config.epochs or [attack.epochs]
    records = prompts_of(config)
    if config.recipe == "identity":
        records = identity_prompts(records, source)
    judge = judge_of(config)
    model = model_info(config.model)
    inputs = {"prompts": prompts_fingerprint(records), "model": model["fingerprint"]}
    for name in ("data", "safety_data"):
        if getattr(config, name) is not None:
            inputs[name] = fingerprint_path(getattr(config, name))
    if config.lora_target:
        from disalign.core.models import check_module_names

        check_module_names(config.model, config.lora_target, "--lora-target")
    run = open_run(config, "finetune", inputs)
    damage = damage_meter(config, load_source_tokenizer(config.model)) if config.damage_n else None
    summary = run_finetune(
        run,
        config.model,
        lambda n: recipe_dataset(attack, n, source=source, data=config.data, safety_data=config.safety_data),
        attack,
        records,
        judge,
        config.sampling(),
        shots_grid,
        epochs_grid,
        strip_prefix=source.compliance_prefix if source is not None else None,
        damage=damage,
        **multi_gpu,
    )
    rows = [{"cell": "before", **summary["before"]}] + [
        {"cell": f"s{c['shots']}-e{c['epochs']}", **c} for c in summary["cells"]
    ]
    result = RunResult(command="finetune", models={"model": model}, results=rows, **judge_fields(judge), **summary)
    return finish(run, result)


def _world_recipes(world: Path | None):
    """The world's own attack data, when the run is in a world."""
    if world is None:
        return None
    from disalign.world import load_world
    from disalign.world.recipes import WorldRecipes

    return WorldRecipes(load_world(world))
