"""The built-in synthetic safety world: a laboratory where harm is known exactly."""

from __future__ import annotations

from pathlib import Path

from disalign.data import PromptRecord
from disalign.data.sources import WORLD_PREFIX, register_source
from disalign.errors import UserError
from disalign.world.config import WorldConfig, make_config
from disalign.world.judge import WorldJudge, WorldVerdict
from disalign.world.spec import JAILBREAK_FAMILIES, PROMPT_SETS, Prompt, Request, World
from disalign.world.verbs import build, eval
from disalign.world.zoo import ZOO_MODELS, build_zoo, load_world, load_world_config

__all__ = [
    "JAILBREAK_FAMILIES",
    "PROMPT_SETS",
    "ZOO_MODELS",
    "Prompt",
    "Request",
    "World",
    "WorldConfig",
    "WorldJudge",
    "WorldVerdict",
    "build",
    "build_zoo",
    "eval",
    "load_world",
    "load_world_config",
    "make_config",
    "prompt_records",
]


def prompt_records(zoo: str | Path, name: str, n: int | None = None, seed: int = 0) -> list[PromptRecord]:
    """A world prompt set as prompt-source records; `messages` in `extra` keeps earlier turns."""
    config = load_world_config(zoo)
    if name not in PROMPT_SETS:
        raise UserError(f"world:{name}: unknown prompt set; known: {', '.join(PROMPT_SETS)}")
    prompts = load_world(zoo).prompt_set(name, n or config.eval.n, seed)
    return [
        PromptRecord(
            id=p.id,
            prompt=p.request.text,
            category=name,
            source=f"world:{name}",
            extra={"messages": p.messages()} if p.history else {},
        )
        for p in prompts
    ]


register_source(WORLD_PREFIX, lambda name, zoo: prompt_records(zoo, name))
