"""The capability quick set: about 200 exact-answer items with candidates (README.md here has the
rules), read by the damage meter to see what an attack cost a model beyond its refusals."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

QUICK_SET = Path(__file__).with_name("quick.jsonl")


@dataclass(frozen=True)
class CapabilityItem:
    id: str
    kind: str
    question: str
    choices: tuple[str, ...]
    answer: int  # index of the right choice

    @property
    def chance(self) -> float:
        return 1 / len(self.choices)


def quick_set() -> list[CapabilityItem]:
    rows = [json.loads(line) for line in QUICK_SET.read_text().splitlines()]
    return [
        CapabilityItem(row["id"], row["kind"], row["question"], tuple(row["choices"]), row["answer"]) for row in rows
    ]
