"""What a judge is, what it returns, and the registry that names them."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from disalign.core.registry import Registry
from disalign.errors import UserError

# Judges right by construction: their rates need no correction and pass unguarded, degenerate text included.
EXACT_JUDGES = {"world": "exact by construction: the world knows each request's true output"}


@dataclass(frozen=True)
class Verdict:
    """One judgement of one response.

    harmful  the response carries out a harmful request (None: the judge could not tell)
    refused  the response declines the request (None: this judge does not say)
    score    the judge's own scale: the rubric's 1-5, the world's 0/1; None where it has none
    correct  the world judge's verdict on safe requests; None elsewhere
    unscorable  why the response could not be scored (empty, degenerate, no words), None when it
             could; such a response is neither harmful nor refused (judges/unscorable.py)
    """

    harmful: bool | None
    refused: bool | None
    score: float | None
    reason: str
    correct: bool | None = None
    unscorable: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Judge(Protocol):
    name: str

    @property
    def config(self) -> dict[str, Any]:
        """What produced the verdicts (never a secret), to store beside them."""
        ...

    def judge(self, prompts: list[str], responses: list[str]) -> list[Verdict]: ...


class ResponseJudge:
    """A judge that reads each response on its own (`judge_one`), never the prompt."""

    name: str

    @property
    def config(self) -> dict[str, Any]:
        return {"judge": self.name}

    def judge(self, prompts: list[str], responses: list[str]) -> list[Verdict]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return [self.judge_one(response) for response in responses]

    @staticmethod
    def judge_one(response: str) -> Verdict:
        raise NotImplementedError


JudgeFactory = Callable[..., Judge]
JUDGES: Registry[JudgeFactory] = Registry("judge")
register = JUDGES.register


def available_judges() -> list[str]:
    return JUDGES.names()


def judge_options(name: str) -> list[str]:
    """The options that judge `name` takes, in its factory's order."""
    return list(inspect.signature(JUDGES.get(name)).parameters)


def get_judge(name: str, **options: Any) -> Judge:
    """Build the judge `name`; options that it does not take, or required ones left out, are
    the user's mistake, so they are named in a UserError rather than raised as TypeError."""
    factory = JUDGES.get(name)
    parameters = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        takes = ", ".join(parameters) or "none"
        raise UserError(f"judge '{name}' has no option {', '.join(unknown)} (its options: {takes})")
    missing = [key for key, p in parameters.items() if p.default is inspect.Parameter.empty and key not in options]
    if missing:
        raise UserError(f"judge '{name}' needs option {', '.join(missing)}")
    return factory(**options)


def option_number(
    judge: str, name: str, value: Any, kind: type, minimum: float, inclusive: bool = True, below: float | None = None
) -> Any:
    """A judge option's value as `kind`, from a number or its text (options arrive from the CLI as text);
    out of range or unreadable is a UserError naming the judge and the option."""
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        number = float(value)
        if not math.isfinite(number) or (kind is int and not number.is_integer()):
            raise ValueError
    except ValueError:
        number = None
    too_high = below is not None and number is not None and number >= below
    if number is None or number < minimum or (number == minimum and not inclusive) or too_high:
        what = "an integer" if kind is int else "a number"
        bound = f"{'>=' if inclusive else '>'} {minimum:g}" + (f" and < {below:g}" if below is not None else "")
        raise UserError(f"judge '{judge}': {name} must be {what} {bound}, got {value!r}")
    return kind(number)


def judge_records(
    records: Sequence[Mapping[str, Any]],
    judge: Judge,
    *,
    prompt_key: str = "prompt",
    response_key: str = "response",
) -> list[dict[str, Any]]:
    """Each record, in input order, with the judge's verdict fields and name added."""
    for index, record in enumerate(records):
        for key in (prompt_key, response_key):
            if not isinstance(record.get(key), str):
                raise UserError(f"record {index}: no text field '{key}' to judge")
    verdicts = judge.judge([r[prompt_key] for r in records], [r[response_key] for r in records])
    return [
        {**record, **verdict.as_dict(), "judge": judge.name} for record, verdict in zip(records, verdicts, strict=True)
    ]
