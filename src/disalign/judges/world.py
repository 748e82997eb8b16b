"""The synthetic world's exact judge, under the registry's name `world`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from disalign.judges.base import Verdict, register

if TYPE_CHECKING:
    from disalign.world.spec import World


@register("world")
class WorldJudgeAdapter:
    """`world` is a World, or a world directory that `disalign.world.load_world` reads."""

    name = "world"

    def __init__(self, world: World | str | os.PathLike[str]):
        # The world package pulls in torch and transformers: import it only for this judge.
        from disalign.world.judge import WorldJudge

        if isinstance(world, (str, os.PathLike)):
            from disalign.world import load_world

            self.world_dir: str | None = str(world)
            world = load_world(world)
        else:
            self.world_dir = None
        self._judge = WorldJudge(world)

    @property
    def config(self) -> dict[str, Any]:
        return {"judge": self.name, "world_dir": self.world_dir, "world": self._judge.world.config.model_dump()}

    def judge(self, prompts: list[str], responses: list[str]) -> list[Verdict]:
        return [
            Verdict(
                harmful=verdict.harmful,
                refused=verdict.refused,
                score=verdict.score,
                reason=verdict.reason,
                correct=verdict.correct,
            )
            for verdict in self._judge.judge(prompts, responses)
        ]
