"""The verb registry: each Python API function, its config class and its CLI name in one place.

`@verb("ed", EDConfig)` turns `def ed(config: EDConfig) -> RunResult` into the public function
`ed(config=None, /, **options)`: a config object, a dict or keyword options, validated once.
The CLI builds one command per registered verb from the config class; a sweep looks verbs up
here by name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from disalign.core.options import Options, coerce
from disalign.results import RunResult


@dataclass(frozen=True)
class Verb:
    name: str  # as typed on the command line: "eval", "world build", "analyze clusters"
    config: type[Options]
    run: Callable[..., RunResult]  # the public function
    summary: str  # first paragraph of the docstring: the command's help


VERBS: dict[str, Verb] = {}


def verb(name: str, config_class: type[Options]) -> Callable[[Callable[[Any], RunResult]], Callable[..., RunResult]]:
    def register(implementation: Callable[[Any], RunResult]) -> Callable[..., RunResult]:
        if name in VERBS:
            raise ValueError(f"verb '{name}' is registered twice")

        @functools.wraps(implementation)
        def public(config: Options | dict[str, Any] | None = None, /, **options: Any) -> RunResult:
            return implementation(coerce(config_class, config, options, name))

        first_paragraph = (implementation.__doc__ or name).strip().split("\n\n")[0]
        VERBS[name] = Verb(name, config_class, public, " ".join(first_paragraph.split()))
        return public

    return register
