"""The `disalign` command: one subcommand per registered verb, its options generated from the
verb's config class, each body one API call. Errors in the input are one line and exit 2.

Every option defaults to "not given", so that `--config FILE` (JSON or YAML holding the same
fields) supplies the rest and the config class alone holds the defaults.
"""

from __future__ import annotations

import inspect
import os
import sys
import types
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import click
import typer
from pydantic.fields import FieldInfo

from disalign.core.options import key_values
from disalign.core.runs import read_mapping
from disalign.errors import DisalignWarning, UserError

# Recent typer parses the command line with its own copy of click, older typer with click itself.
_USAGE_ERRORS: tuple[type[Exception], ...] = (click.UsageError, *filter(None, [getattr(typer, "TyperException", None)]))

CONFIG_HOLDS = "must hold an object of option names and values"
_INTERRUPTED = 130  # the shell's status for a command stopped by SIGINT

app = typer.Typer(
    help="Measure how easily a language model's safety alignment is undone, and explain why.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _option_type(annotation: Any) -> tuple[Any, str]:
    """The type typer parses for a config field, and how the text becomes the field's value:
    'value' (as typed), 'list' (repeatable, comma lists allowed), 'mapping' (repeatable KEY=VALUE)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _option_type(members[0]) if len(members) == 1 else (str, "value")
    if origin in (list, tuple):
        return list[str], "list"
    if origin is dict:
        return list[str], "mapping"
    if origin is Literal or annotation is Any:
        return str, "value"
    if annotation in (bool, int, float, str, Path):
        return annotation, "value"
    return str, "value"


def _mapping(option: str, items: list[str]) -> dict[str, str]:
    try:
        return key_values(items)
    except ValueError as err:
        raise UserError(f"{option} {err}") from None


def _command(verb) -> None:
    """Register `verb` on the app (under its group for two-word names)."""
    fields: dict[str, FieldInfo] = verb.config.model_fields
    kinds: dict[str, str] = {}
    parameters = [
        _parameter("config_file", Optional[Path], typer.Option("--config", help="JSON or YAML file of options."))
    ]
    own = [name for name in verb.config.__annotations__ if name in fields]
    for name in own + [name for name in fields if name not in own]:
        field = fields[name]
        option_type, kinds[name] = _option_type(field.annotation)
        spelled = (field.alias or name).replace("_", "-")  # a training field's alias keeps the verbs' flag
        flag = "--" + spelled
        # The option itself defaults to "not given" (see above), so the config's default is shown as text.
        shown = False if field.is_required() else _shown(field)
        declarations = [flag] if option_type is not bool else [f"{flag}/--no-{spelled}"]
        help_text = field.description or ""
        option = typer.Option(*declarations, help=help_text, show_default=shown)
        parameters.append(_parameter(name, Optional[option_type], option))
        if (field.json_schema_extra or {}).get("positional"):
            # Also as the command's arguments (`disalign report RUN...`); the flag stays for --config users.
            kinds[f"{name}_given"] = kinds[name]
            argument = typer.Argument(help=help_text, show_default=False, metavar=name.upper())
            parameters.append(_parameter(f"{name}_given", Optional[option_type], argument))

    def run(**given: Any) -> None:
        config_file = given.pop("config_file")
        options = read_mapping(config_file, "a config file", CONFIG_HOLDS, option="--config") if config_file else {}
        for name in [key for key in given if key.endswith("_given")]:
            positional = given.pop(name)
            if positional:
                given[name.removesuffix("_given")] = positional
        for name, value in given.items():
            if value is None or (kinds[name] != "value" and not value):
                continue
            options[name] = _mapping(f"--{name.replace('_', '-')}", value) if kinds[name] == "mapping" else value
        result = verb.run(options)
        _print_result(result)
        if (result.model_extra or {}).get("failed"):  # a sweep with failed cells: recorded, yet not a success
            sys.exit(1)

    run.__signature__ = inspect.Signature(parameters)
    run.__doc__ = verb.summary
    *group, command = verb.name.split()
    target = _group(group[0]) if group else app
    target.command(command, help=verb.summary)(run)


_GROUPS: dict[str, typer.Typer] = {}
_GROUP_HELP = {
    "world": "Build and evaluate the synthetic safety world and its model zoo.",
    "analyze": "Explain an alignment or an attack: activation clusters, weight change, depth, attack geometry.",
    "beb": "Behavior Expectation Bounds: how long a prompt must be to trigger a behaviour.",
}


def _parameter(name: str, annotation: Any, declaration: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[annotation, declaration]
    )


def _group(name: str) -> typer.Typer:
    if name not in _GROUPS:
        _GROUPS[name] = typer.Typer(help=_GROUP_HELP.get(name), no_args_is_help=True)
        app.add_typer(_GROUPS[name], name=name)
    return _GROUPS[name]


def _shown(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value) or "none"
    if isinstance(value, dict):
        return "none" if not value else ",".join(f"{k}={v}" for k, v in value.items())
    return "none" if value is None else str(value)


def _print_result(result) -> None:
    """One line per result row on stdout: its coordinates, then the rate with its interval."""
    from disalign.core.progress import results_console

    rate_keys = {"harmful_rate", "refusal_rate", "ci", "n"}
    for row in result.results:
        data = row.model_dump()
        coordinates = "  ".join(
            f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in data.items()
            if key not in rate_keys and isinstance(value, str | int | float) and not isinstance(value, bool)
        )
        rate = data.get("harmful_rate")
        ci = data.get("ci") or (None, None)
        interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if None not in ci else "[n/a]"
        shown = "n/a" if rate is None else f"{rate:.1%}"
        results_console.print(f"{coordinates}  harmful {shown}  CI {interval}  n={data.get('n')}".strip())


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets.utils.logging import disable_progress_bar as disable_datasets_progress
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_datasets_progress()
    _silence_library_deprecations()
    _show_warnings_in_one_line()
    try:
        exit_code = app(standalone_mode=False)
    except UserError as err:
        print(f"disalign: error: {err}", file=sys.stderr)
        sys.exit(2)
    except _USAGE_ERRORS as err:  # an unknown flag, a value of the wrong type
        if err.__class__.__name__ != "NoArgsIsHelpError":  # `disalign` alone: typer has printed the help
            print(f"disalign: error: {err.format_message()}", file=sys.stderr)
        sys.exit(2)
    except (click.Abort, typer.Abort):
        _interrupted()
    except KeyboardInterrupt:
        _interrupted()
    # Outside standalone mode typer turns Ctrl-C into a returned 130 rather than an exception.
    if exit_code == _INTERRUPTED:
        _interrupted()


def _silence_library_deprecations() -> None:
    # peft reads transformers' deprecated `is_gradient_checkpointing` whenever it wraps a model:
    # a FutureWarning per LoRA adapter (eight in the demo) that the user can do nothing about.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def _show_warnings_in_one_line() -> None:
    """disalign's own warnings (a fallback it took) as one line each, like its errors; others as usual."""
    if getattr(warnings.showwarning, "shows_disalign_warnings", False):
        return
    show = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DisalignWarning):
            print(f"disalign: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    one_line.shows_disalign_warnings = True
    warnings.showwarning = one_line


def _interrupted() -> None:
    print(
        "disalign: interrupted; everything already written is kept, rerun with the same --out to continue",
        file=sys.stderr,
    )
    sys.exit(_INTERRUPTED)


def _register_all() -> None:
    import disalign  # noqa: F401  (imports every verb, which registers itself)
    from disalign.core.verbs import VERBS

    for verb in VERBS.values():
        _command(verb)


_register_all()
