"""`load_prompts`: one entry point from a source string to a list of PromptRecord.

A source is, checked in this order:
  world:<set>        a prompt set of a synthetic world (needs `world`, a world directory)
  benign-control     the requests shipped with disalign that sound sensitive but are fine to answer
  advbench, harmbench, hexphi, donotanswer
                     an upstream data set from the cache (fetched only when offline=False)
  a path             a .jsonl, .csv or .txt file, or a folder of them (HEx-PHI's included)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from disalign.data import upstream
from disalign.data.files import SUFFIXES, load_file
from disalign.data.folders import load_folder
from disalign.data.records import PromptRecord
from disalign.errors import UserError

WORLD_PREFIX = "world:"
BENIGN_CONTROL = "benign-control"


# Prefix -> loader(set name, world directory): prompt sources that packages above this one
# provide; the synthetic world registers "world:".
SourceLoader = Callable[[str, "str | os.PathLike[str] | None"], list[PromptRecord]]
_REGISTERED: dict[str, SourceLoader] = {}


def register_source(prefix: str, loader: SourceLoader) -> None:
    _REGISTERED[prefix] = loader


def load_prompts(
    source: str,
    *,
    column: str | None = None,
    include_contextual: bool = False,
    world: str | os.PathLike[str] | None = None,
    offline: bool = True,
) -> list[PromptRecord]:
    if source.startswith(WORLD_PREFIX):
        return _world_prompts(source, world)
    if source == BENIGN_CONTROL:
        return _benign_control()
    if source in upstream.UPSTREAM:
        path = _upstream_path(source, offline)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise UserError(
                f"{source}: no such file or folder (give a {'/'.join(SUFFIXES)} file, a folder, "
                f"'{WORLD_PREFIX}<set>', '{BENIGN_CONTROL}' or one of {', '.join(upstream.UPSTREAM)})"
            )
    if path.is_dir():
        records = load_folder(path, column=column, include_contextual=include_contextual)
    else:
        records = load_file(path, column=column, include_contextual=include_contextual)
    _check_unique_ids(source, records)
    return records


def _world_prompts(source: str, world: str | os.PathLike[str] | None) -> list[PromptRecord]:
    name = source.removeprefix(WORLD_PREFIX)
    if not name:
        raise UserError(f"{source}: name a world prompt set, as in world:unsafe")
    if world is None:
        raise UserError(f"{source} needs --world DIR")
    if WORLD_PREFIX not in _REGISTERED:
        raise UserError(f"{source}: the synthetic world is not loaded (import disalign.world)")
    return _REGISTERED[WORLD_PREFIX](name, world)


def _benign_control() -> list[PromptRecord]:
    shipped = resources.files("disalign.data").joinpath("benign_control.jsonl")
    with resources.as_file(shipped) as path:
        return load_file(path, source=BENIGN_CONTROL)


def _upstream_path(name: str, offline: bool) -> Path:
    if upstream.is_cached(name):
        return upstream.cached_path(name)
    if offline:
        raise UserError(upstream.missing_message(name))
    return upstream.fetch_source(name)


def _check_unique_ids(source: str, records: list[PromptRecord]) -> None:
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise UserError(f"{source}: prompt id '{record.id}' appears twice; ids must be unique")
        seen.add(record.id)
