"""Training examples: the conversations every trainer here reads.

An example is `{"messages": [system?, user, assistant], "origin": "FILE:LINE"}`; `origin` names
where it came from so errors can point at it, and is dropped before training.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Example = dict[str, Any]


def conversation(user: str, assistant: str, system: str | None = None, origin: str = "") -> Example:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages, "origin": origin}


def shuffled(examples: list[Example], seed: int) -> list[Example]:
    order = np.random.default_rng([seed, 15485863]).permutation(len(examples))
    return [examples[i] for i in order]
