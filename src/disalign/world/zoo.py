"""Build the zoo: a base model pretrained on the world and its three aligned versions.

    DIR/world.json      the world's config, its hash and the disalign version that built it;
                        `load_world(DIR)` regenerates all its data
    DIR/base            pretrained base model (HF directory: safetensors + tokenizer)
    DIR/sft, dpo, unlearn
    DIR/config.json, records.jsonl, summary.json   the run directory of the build

Each model is written to a temporary directory and renamed into place, so an interrupted
build resumes at the first model that is missing. A directory is reused only by the config
and version that built it: anything else stops (or, with `rebuild`, starts afresh), so a zoo
never mixes models of two builds.
"""

from __future__ import annotations

import json
import shutil
import time
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from disalign.core.runs import RunDir, fingerprint, read_json, write_json_atomic
from disalign.errors import UserError
from disalign.world.config import WorldConfig, make_config
from disalign.world.model import build_model, build_tokenizer
from disalign.world.spec import JAILBREAK_FAMILIES, PROMPT_SETS, World
from disalign.world.train import ALIGNMENT_METHODS, align_world_model, pretrain

WORLD_FILE = "world.json"
DISALIGN_VERSION = metadata.version("disalign")
ZOO_MODELS = ("base", *ALIGNMENT_METHODS)


def load_world_config(zoo: str | Path) -> WorldConfig:
    return _read_zoo(*_world_file(zoo))[0]


def load_world(zoo: str | Path) -> World:
    """The zoo's world, read and generated once per process for each version of its world file:
    every verb, prompt source and judge of a run shares the one object."""
    return _read_zoo(*_world_file(zoo))[1]


def _world_file(zoo: str | Path) -> tuple[Path, int]:
    path = Path(zoo) / WORLD_FILE
    if not path.is_file():
        raise UserError(f"{zoo}: not a world zoo (no {WORLD_FILE}); build one with `disalign world build`")
    return path.resolve(), path.stat().st_mtime_ns


@cache
def _read_zoo(path: Path, mtime_ns: int) -> tuple[WorldConfig, World]:
    data = read_json(path)
    if not isinstance(data, dict) or "config" not in data:
        raise UserError(f"{path}: corrupt world file (no 'config')")
    config = make_config(data["config"])
    return config, World(config.world)


def build_zoo(out: str | Path, config: WorldConfig, rebuild: bool = False) -> dict:
    """Build (or finish building) the zoo in `out`; returns per-model training statistics.

    A zoo built there by another config or disalign version is a UserError naming the
    difference, unless `rebuild`, which discards it and builds afresh.
    """
    out = Path(out)
    dump = json.loads(json.dumps(config.model_dump()))
    identity = {"config_hash": fingerprint(dump), "disalign_version": DISALIGN_VERSION}
    stale = _stale(out, dump, identity)
    if stale and not rebuild:
        raise UserError(f"{out}: holds a zoo built with {stale}; rebuild=True (--rebuild) discards it and rebuilds")
    # RunDir empties a stale zoo only if disalign wrote it and no other run holds it.
    run = RunDir(out, "world build", dump, overwrite=bool(stale))
    world = World(config.world)
    write_json_atomic(
        run.file(WORLD_FILE),
        {
            **identity,
            "config": dump,
            "models": list(ZOO_MODELS),
            "prompt_sets": list(PROMPT_SETS),
            "jailbreak_families": list(JAILBREAK_FAMILIES),
            "unsafe_operators": {k: sorted(v) for k, v in world.unsafe_operators.items()},
            "alias_of": world.alias_of,
        },
    )
    torch.set_num_threads(config.train.threads)
    tokenizer = build_tokenizer(world)
    seed = config.world.seed
    stats = {record["model"]: record["training"] for record in run.records() if "training" in record}

    if not _complete(out / "base"):
        model = build_model(world, config.model, seed)
        stats["base"] = pretrain(model, world, config.train, seed).as_dict()
        _save(model, tokenizer, out / "base")
        run.append([{"key": "train:base", "model": "base", "training": stats["base"]}])
    for method in ALIGNMENT_METHODS:
        if _complete(out / method):
            continue
        model = _load(out / "base")
        reference = _load(out / "base") if method == "dpo" else None
        stats[method] = align_world_model(model, world, method, config.train, seed, reference).as_dict()
        _save(model, tokenizer, out / method)
        run.append([{"key": f"train:{method}", "model": method, "training": stats[method]}])
    run.write_summary({"training": stats, "config": dump, **identity})
    return stats


def _stale(out: Path, config: dict[str, Any], identity: dict[str, str]) -> str:
    """What makes the zoo in `out` another build than this one ('' when none is there or it is this one)."""
    if not out.exists():
        return ""
    if not (out / WORLD_FILE).is_file():
        if out.is_dir() and not any(out.iterdir()):
            return ""
        raise UserError(f"{out}: not empty and not a world zoo; choose another directory")
    stored = read_json(out / WORLD_FILE)
    if not isinstance(stored, dict):
        raise UserError(f"{out / WORLD_FILE}: corrupt world file")
    if stored.get("config_hash") == identity["config_hash"] and stored.get("disalign_version") == DISALIGN_VERSION:
        return ""
    changes = _config_changes(stored.get("config"), config)
    if changes:
        return "another config (" + ", ".join(changes) + ")"
    built_by = stored.get("disalign_version", "a version without zoo hashes")
    return f"disalign {built_by}, not {DISALIGN_VERSION}"


_ABSENT = object()


def _shown(value: Any) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value)


def _config_changes(stored: Any, current: Any, prefix: str = "", limit: int = 3) -> list[str]:
    """Up to `limit` differences as 'section.key old -> new'."""
    if stored == current:
        return []
    if not (isinstance(stored, dict) and isinstance(current, dict)):
        return [f"{prefix or 'config'} {_shown(stored)} -> {_shown(current)}"]
    changes: list[str] = []
    for key in sorted(set(stored) | set(current)):
        changes += _config_changes(
            stored.get(key, _ABSENT), current.get(key, _ABSENT), f"{prefix}.{key}" if prefix else key
        )
    return changes[:limit]


def _complete(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def _load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)


def _save(model, tokenizer, target: Path) -> None:
    partial = target.with_name(target.name + f".partial-{int(time.time())}")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
