"""Measure the defences in a world zoo with the existing verbs: the README's defence figures.

    python examples/defences_world.py ZOO OUT [--trials 16]

Defends the zoo's base with each method (`disalign defend --world ZOO`), beside a control trained by
the same loop with no defence (`deepen --recovery-share 0`) and the zoo's own `sft`; then, for every
model: `eval` on unsafe and safe requests (harm, over-refusal, safe accuracy), `analyze depth` (the
KL mass per response position, the harm after k prefilled harmful tokens), `ablate` within
first-token KL ≤ 0.1, and the tier-1 fine-tuning attack (`finetune --recipe harmful`, 10 shots × 5
epochs, the world's preset lr). Every run is resumable; prints one JSON object of the claims.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import disalign
from disalign.core.stats import wilson_ci

DEFENCES = ("deepen", "ablation-robust", "booster", "extended")
KL_BUDGET = 0.1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("zoo", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--trials", type=int, default=16)
    args = parser.parse_args()
    zoo, out = args.zoo, args.out
    rows: dict[str, dict] = {}
    for name in ("control", *DEFENCES, "sft"):
        if name == "sft":
            path = str(zoo / "sft")
        else:
            options = {"method": "deepen", "recovery_share": 0.0} if name == "control" else {"method": name}
            disalign.defend(**options, world=zoo, out=out / name)
            path = str(out / name / "model")
        rows[name] = measure(name, path, zoo, out, args.trials)
        # Written as each model is measured, so a long run shows its figures as it goes.
        (out / "defences.json").write_text(json.dumps({"models": rows, "claims": claims(rows)}, indent=1) + "\n")
    print(json.dumps({"models": rows, "claims": claims(rows)}))


def measure(name: str, path: str, zoo: Path, out: Path, trials: int) -> dict:
    unsafe = disalign.eval(model=path, prompts="world:unsafe", world=zoo, out=out / "eval" / f"{name}-unsafe")
    safe = disalign.eval(model=path, prompts="world:safe", world=zoo, out=out / "eval" / f"{name}-safe")
    correct = [r["correct"] for r in _records(out / "eval" / f"{name}-safe") if r.get("correct") is not None]
    ablated = disalign.ablate(model=path, world=zoo, trials=trials, kl_budget=KL_BUDGET, out=out / "ablate" / name)
    attacked = disalign.finetune(
        model=path, recipe="harmful", shots=[10], epochs=[5], world=zoo, out=out / "finetune" / name
    )
    depth = disalign.analyze.depth(base=str(zoo / "base"), aligned=[path], world=zoo, out=out / "depth" / name)
    entry = next(iter(depth.model_dump()["depth"].values()))
    ablate_summary = ablated.model_dump()
    finetune_summary = attacked.model_dump()
    cell = finetune_summary["cells"][0] if finetune_summary.get("cells") else finetune_summary["results"][-1]
    return {
        "harmful": _rate(unsafe.model_dump(), "harmful_rate"),
        "refusal_unsafe": _rate(unsafe.model_dump(), "refusal_rate"),
        "over_refusal": _rate(safe.model_dump(), "refusal_rate"),
        "safe_accuracy": _share(sum(correct), len(correct)),
        "ablation": {
            "before": ablate_summary.get("before"),
            "after": ablate_summary.get("after"),
            "damage": ablate_summary.get("damage"),
            "chosen": ablate_summary.get("direction"),
            "edit_found": ablate_summary.get("edit_found"),
            "outcome": ablate_summary.get("outcome"),
        },
        "finetune_tier1": {"harmful_rate": cell.get("harmful_rate"), "ci": cell.get("ci"), "n": cell.get("n")},
        "depth": {
            "share_first_3": {part: entry[part]["share_first_3"] for part in ("own", "harmful") if part in entry},
            "prefill": [
                {"tokens": r["prefill_tokens"], "harmful_rate": r["harmful_rate"], "ci": r["ci"], "n": r["n"]}
                for r in entry["prefill"]
            ],
        },
    }


def claims(rows: dict) -> dict:
    """Each of the issue's claims against the control (same loop, no defence), with intervals."""
    control = rows["control"]
    result = {}
    for name in [n for n in DEFENCES if n in rows]:
        row = rows[name]
        result[name] = {
            "over_refusal_cost": _difference(row["over_refusal"], control["over_refusal"]),
            "safe_accuracy_cost": _difference(control["safe_accuracy"], row["safe_accuracy"]),
            "ablation_refusal_after": _difference(_after_refusal(row), _after_refusal(control)),
            "finetune_harm": _difference(_finetune(row), _finetune(control)),
        }
    return result


def _records(run: Path):
    return [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines() if line.strip()]


def _share(k: int, n: int) -> dict:
    return {"rate": k / n if n else None, "ci": list(wilson_ci(k, n)) if n else None, "n": n, "k": k}


def _rate(summary: dict, key: str) -> dict:
    value, n = summary.get(key), summary.get("n") or (summary["results"][0].get("n") if summary.get("results") else 0)
    if value is None and summary.get("results"):
        value = summary["results"][0].get(key)
    return _share(round(value * n), n) if value is not None and n else {"rate": value, "n": n}


def _after_refusal(row: dict) -> dict:
    """The refusal rate after the chosen ablation; where no edit within the KL budget lowered refusals,
    the attack changed nothing and the rate stays the model's own."""
    ablation = row["ablation"]
    after = ablation["after"] or (ablation["before"] if ablation.get("edit_found") is False else {})
    n = after.get("n") or 0
    rate = after.get("refusal_rate")
    return _share(round(rate * n), n) if rate is not None and n else {"rate": None, "n": 0}


def _finetune(row: dict) -> dict:
    cell = row["finetune_tier1"]
    n = cell.get("n") or 0
    return _share(round(cell["harmful_rate"] * n), n) if cell.get("harmful_rate") is not None and n else {"rate": None}


def _difference(first: dict, second: dict) -> dict:
    """first − second with Newcombe's hybrid Wilson interval for two independent proportions."""
    if first.get("rate") is None or second.get("rate") is None:
        return {"difference": None}
    p1, (l1, u1) = first["rate"], first["ci"]
    p2, (l2, u2) = second["rate"], second["ci"]
    d = p1 - p2
    return {
        "difference": d,
        "ci": [d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)],
    }


if __name__ == "__main__":
    main()
