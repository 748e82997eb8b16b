"""Several judges side by side over the same records: each one's rate, how far each pair agrees
(Cohen's κ), and which records they disagree on, so a reader sees how much a conclusion rests on
the choice of judge.

`build_judges("refusal,keyword,rubric", options)` turns a `--judge` list and its
`--judge-option KEY=VALUE` pairs into judges: `name.key=value` goes to that judge only, a bare
`key=value` to every listed judge that takes it, and a key that no listed judge takes is an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

from disalign.core.stats import agreement, rate_summary
from disalign.errors import UserError
from disalign.judges.base import Judge, Verdict, available_judges, get_judge, judge_options

# The verdict field compared, and the name its rate carries in a summary.
RATE_KEYS = {"harmful": "harmful_rate", "refused": "refusal_rate"}


def parse_judge_names(spec: str | Sequence[str]) -> list[str]:
    """`"refusal,keyword"` or `["refusal", "keyword"]` as a list of distinct, known judge names."""
    parts = spec.split(",") if isinstance(spec, str) else [p for item in spec for p in item.split(",")]
    names = [part.strip() for part in parts if part.strip()]
    if not names:
        raise UserError("--judge: no judge named")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserError(f"--judge: {', '.join(duplicates)} named twice")
    known = available_judges()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(f"--judge: unknown judge {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def build_judges(spec: str | Sequence[str], options: Mapping[str, Any] | None = None) -> list[Judge]:
    """The judges named in `spec`, in order, each given the options meant for it."""
    names = parse_judge_names(spec)
    takes = {name: set(judge_options(name)) for name in names}
    per_judge: dict[str, dict[str, Any]] = {name: {} for name in names}
    for key, value in (options or {}).items():
        target, _, option = key.rpartition(".")
        if target:
            if target not in per_judge:
                raise UserError(f"--judge-option {key}: judge '{target}' is not in the --judge list")
            per_judge[target][option] = value
            continue
        receivers = [name for name in names if option in takes[name]]
        if not receivers:
            raise UserError(f"--judge-option {key}: none of the judges {', '.join(names)} takes it")
        for name in receivers:
            per_judge[name][option] = value
    return [get_judge(name, **per_judge[name]) for name in names]


def compare_verdicts(verdicts: Mapping[str, Sequence[Verdict]], *, field: str = "harmful") -> dict[str, Any]:
    """Each judge's rate of `field` (harmful or refused) with its Wilson interval, Cohen's κ and raw
    agreement for every pair of judges over the records both decided, and the indices of the
    records on which two judges that both decided disagree.

    `verdicts` maps a judge's name to its verdicts, one per record, in the same record order."""
    if field not in RATE_KEYS:
        raise UserError(f"compare judges on one of {', '.join(RATE_KEYS)}, not '{field}'")
    lengths = {name: len(judged) for name, judged in verdicts.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"judges saw different numbers of records: {lengths}")
    values = {name: [getattr(v, field) for v in judged] for name, judged in verdicts.items()}
    rates = {name: rate_summary(column, key=RATE_KEYS[field]) for name, column in values.items()}
    pairs = []
    for first, second in combinations(values, 2):
        measured = agreement(values[first], values[second])
        pairs.append(
            {
                "judges": [first, second],
                "agreement": measured["accuracy"],
                "cohen_kappa": measured["cohen_kappa"],
                "n": measured["n"],
            }
        )
    n_records = next(iter(lengths.values()), 0)
    disagreements = [
        index
        for index in range(n_records)
        if len({column[index] for column in values.values() if column[index] is not None}) > 1
    ]
    return {"field": field, "judges": list(values), "rates": rates, "pairs": pairs, "disagreements": disagreements}


def judge_side_by_side(
    judges: Sequence[Judge], prompts: list[str], responses: list[str], *, field: str = "harmful"
) -> tuple[dict[str, list[Verdict]], dict[str, Any]]:
    """Run every judge over the same pairs; their verdicts by judge name, and `compare_verdicts`."""
    verdicts = {judge.name: judge.judge(prompts, responses) for judge in judges}
    return verdicts, compare_verdicts(verdicts, field=field)


@dataclasses.dataclass(frozen=True)
class PanelVerdict(Verdict):
    """The first judge's verdict, with every judge's verdict beside it under `panel`."""

    panel: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


class JudgePanel:
    """Several judges run as one over the same records (`--judge refusal,keyword,rubric`): the
    first one decides `harmful`/`refused`, each record keeps all of them for `compare_verdicts`."""

    def __init__(self, judges: Sequence[Judge]):
        self.judges = list(judges)
        self.name = ",".join(judge.name for judge in self.judges)

    @property
    def config(self) -> dict[str, Any]:
        return {"judge": self.name, "panel": [judge.config for judge in self.judges]}

    def judge(self, prompts: list[str], responses: list[str]) -> list[PanelVerdict]:
        verdicts = {judge.name: judge.judge(prompts, responses) for judge in self.judges}
        first = verdicts[self.judges[0].name]
        return [
            PanelVerdict(**lead.as_dict(), panel={name: judged[i].as_dict() for name, judged in verdicts.items()})
            for i, lead in enumerate(first)
        ]


def compare_records(records: Sequence[Mapping[str, Any]], *, field: str = "harmful") -> dict[str, Any]:
    """`compare_verdicts` over records a `JudgePanel` judged, disagreements named by record id (a
    generated record's `id`, a judged file's row `key`)."""
    names = list(records[0]["panel"]) if records else []
    verdicts = {name: [Verdict(**record["panel"][name]) for record in records] for name in names}
    comparison = compare_verdicts(verdicts, field=field)
    comparison["disagreements"] = [
        records[index].get("id", records[index].get("key")) for index in comparison["disagreements"]
    ]
    return comparison
