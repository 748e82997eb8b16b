"""What every verb does the same way: read prompts and models, build the judge, open the run,
and finish with the one result schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from disalign.core.options import JudgeOptions, Options, PromptOptions, RunOptions
from disalign.core.runs import RunDir, fingerprint, fingerprint_path
from disalign.data import PromptRecord, load_prompts
from disalign.errors import UserError
from disalign.results import RunResult


def prompts_of(options: PromptOptions, source: str | None = None) -> list[PromptRecord]:
    """The prompt rows the options select (`source` overrides `options.prompts`)."""
    source = source or options.prompts
    records = load_prompts(source, column=options.column, world=options.world)
    if not records:
        raise UserError(f"{source}: no usable prompts")
    return records[: options.limit] if options.limit else records


def prompts_fingerprint(records: Sequence[PromptRecord]) -> str:
    return fingerprint([record.as_dict() for record in records])


def judge_of(options: JudgeOptions, name: str | None = None):
    """The judge the options name; a comma-separated list is a panel judged side by side."""
    from disalign.judges import get_judge
    from disalign.judges.compare import JudgePanel, build_judges, parse_judge_names

    names = parse_judge_names(name or options.judge)
    judge_options: dict[str, Any] = dict(options.judge_option)
    if "world" in names:
        world = getattr(options, "world", None)
        if world is None:
            raise UserError("the world judge needs --world DIR")
        judge_options["world" if len(names) == 1 else "world.world"] = world
    if len(names) > 1:
        return JudgePanel(build_judges(names, judge_options))
    return get_judge(names[0], **judge_options)


def model_info(source: str) -> dict[str, Any]:
    """Where a model came from and a fingerprint of what it is (its files' content)."""
    from disalign.core.models import resolve_model

    resolved = resolve_model(source)
    return {"path": str(source), "resolved": str(resolved.path), "fingerprint": fingerprint_path(resolved.path)}


def open_run(config: RunOptions, command: str, inputs: dict[str, str]) -> RunDir:
    """The run directory of `config.out` (in memory without one). Everything that decides the
    outputs goes into the stored config: the options (minus where to write) and the inputs' content."""
    stored = config.model_dump(mode="json", exclude={"out", "overwrite"})
    return RunDir(config.out, command, stored, inputs=inputs, overwrite=config.overwrite)


def finish(run: RunDir, result: RunResult) -> RunResult:
    run.write_summary(result.to_json())
    return result


class DamageOptions(Options):
    harmless: str | None = Field(
        None,
        description="Harmless prompts for the damage measure (default: world:safe with --world, else benign-control).",
    )
    damage_n: int = Field(64, ge=0, description="Harmless prompts the damage measure reads (0: skip it).")


def damage_meter(config, tokenizer, respond=None):
    """`measure(original, attacked) -> damage dict` on the config's harmless prompts, with the
    world's safe accuracy where there is a world; None when the measure is switched off.
    `respond(model, prompts)` answers for models that `generate` cannot run (see core.damage)."""
    from disalign.core.damage import damage, judged_accuracy

    if config.damage_n == 0:
        return None
    source = config.harmless or ("world:safe" if config.world else "benign-control")
    harmless = load_prompts(source, world=config.world)[: config.damage_n]
    accuracy = None
    if config.world is not None:
        from disalign.judges import get_judge

        sampling = config.sampling()
        accuracy = judged_accuracy(tokenizer, harmless, get_judge("world", world=config.world), sampling, respond)

    def measure(original, attacked) -> dict[str, float | None]:
        return damage(original, attacked, tokenizer, harmless, accuracy=accuracy, batch_size=config.batch_size)

    return measure
