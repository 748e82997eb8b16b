"""The contract of a demo section: one module per section, each exporting `SECTION`.

A section reads the shared `DemoContext`, runs the verbs it needs, and returns the dict that
becomes its key in the demo's `summary.json`; `render` turns that dict into one table and
`notes` into lines printed under it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from disalign.core.generation import SamplingConfig
from disalign.core.runs import RunDir


@dataclass
class DemoContext:
    zoo: Path
    run: RunDir
    config: Any  # the world's WorldConfig
    results: dict[str, Any]  # earlier sections' results, by key
    world: Any  # the loaded World
    judge: Any  # the world's exact judge, which every section uses
    sampling: SamplingConfig

    def sampling_options(self) -> dict[str, Any]:
        """The sampling options of the `ed` and `finetune` verbs, as this demo samples."""
        return {
            "max_new_tokens": self.sampling.max_new_tokens,
            "temperature": self.sampling.temperature,
            "top_p": self.sampling.top_p,
            "batch_size": self.sampling.batch_size,
            "seed": self.sampling.seed,
        }


@dataclass(frozen=True)
class DemoSection:
    key: str
    run: Callable[[DemoContext], Any]
    render: Callable[[Any], Table]
    notes: Callable[[Any], list[str]] = lambda _: []
