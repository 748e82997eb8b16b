"""`disalign compare`: the paired difference of two runs over shared prompts, checked by hand."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from disalign.api.compare import compare
from disalign.core.stats import paired_difference
from disalign.errors import UserError


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _run(path, judge: str, verdicts: list[tuple[str, bool]]) -> None:
    path.mkdir()
    records = [
        {"key": str(i), "id": str(i), "prompt": prompt, "response": "...", "harmful": harmful, "refused": not harmful}
        for i, (prompt, harmful) in enumerate(verdicts)
    ]
    (path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "summary.json").write_text(json.dumps({"command": "eval", "judge": judge, "results": []}))


# Newcombe's (1998) first example: 12 both, 9 only A, 2 only B, 21 neither.
BOTH, ONLY_A, ONLY_B, NEITHER = 12, 9, 2, 21


def _pairs() -> tuple[list[bool], list[bool]]:
    a = [True] * BOTH + [True] * ONLY_A + [False] * ONLY_B + [False] * NEITHER
    b = [True] * BOTH + [False] * ONLY_A + [True] * ONLY_B + [False] * NEITHER
    return a, b


def _hand_interval() -> tuple[float, float, float]:
    n = BOTH + ONLY_A + ONLY_B + NEITHER
    p1, p2 = (BOTH + ONLY_A) / n, (BOTH + ONLY_B) / n
    (l1, u1), (l2, u2) = _wilson(BOTH + ONLY_A, n), _wilson(BOTH + ONLY_B, n)
    phi = (BOTH * NEITHER - ONLY_A * ONLY_B) / math.sqrt(
        (BOTH + ONLY_A) * (ONLY_B + NEITHER) * (BOTH + ONLY_B) * (ONLY_A + NEITHER)
    )
    below = math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    above = math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return p1 - p2, p1 - p2 - below, p1 - p2 + above


def test_paired_difference_is_newcombes_hand_computed_interval_and_mcnemars_exact_test():
    difference, low, high = _hand_interval()
    found = paired_difference(*_pairs())
    assert found["difference"] == pytest.approx(7 / 44)
    assert found["ci"] == pytest.approx([low, high])
    # Exact McNemar: two-sided binomial tail of 2 or fewer of 11 discordant pairs at 1/2.
    tail = sum(math.comb(11, k) for k in range(3)) / 2**11
    assert found["mcnemar_p"] == pytest.approx(2 * tail)
    assert found["discordant"] == [ONLY_A, ONLY_B]


def test_compare_verb_gives_the_hand_computation_over_shared_prompts(tmp_path):
    a, b = _pairs()
    prompts = [f"prompt {i}" for i in range(len(a))]
    _run(tmp_path / "a", "stance", list(zip(prompts, a, strict=True)) + [("only in a", True)])
    _run(tmp_path / "b", "stance", list(zip(reversed(prompts), reversed(b), strict=True)))
    result = compare(runs=[tmp_path / "a", tmp_path / "b"])
    harmful = next(row for row in result.to_json()["results"] if row["rate"] == "harmful_rate")
    difference, low, high = _hand_interval()
    assert harmful["difference"] == pytest.approx(difference)
    assert harmful["ci"] == pytest.approx([low, high])
    assert result.to_json()["shared_prompts"] == len(a) and result.to_json()["only_a"] == 1


def test_compare_with_several_records_per_prompt_resamples_prompts(tmp_path):
    _run(tmp_path / "a", "stance", [("p1", True), ("p1", False), ("p2", True), ("p2", True), ("p3", False)])
    _run(tmp_path / "b", "stance", [("p1", False), ("p2", False), ("p3", False)])
    result = compare(runs=[tmp_path / "a", tmp_path / "b"])
    harmful = next(row for row in result.to_json()["results"] if row["rate"] == "harmful_rate")
    assert harmful["difference"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert harmful["mcnemar_p"] is None and harmful["ci"][0] <= harmful["difference"] <= harmful["ci"][1]


def test_compare_refuses_different_judges_and_no_shared_prompts(tmp_path):
    _run(tmp_path / "a", "stance", [("p1", True)])
    _run(tmp_path / "b", "keyword", [("p1", False)])
    _run(tmp_path / "c", "stance", [("p2", False)])
    with pytest.raises(UserError, match="different judges"):
        compare(runs=[tmp_path / "a", tmp_path / "b"])
    assert compare(runs=[tmp_path / "a", tmp_path / "b"], allow_different_judges=True).results
    with pytest.raises(UserError, match="share no prompt"):
        compare(runs=[tmp_path / "a", tmp_path / "c"])


def test_compare_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    _run(tmp_path / "a", "stance", [("p1", True)])
    _run(tmp_path / "c", "stance", [("p2", False)])
    done = subprocess.run(
        [sys.executable, "-m", "disalign", "compare", str(tmp_path / "a"), str(tmp_path / "c")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "share no prompt" in done.stderr


def test_paired_rate_pairs_two_cells_of_one_run_by_prompt():
    from disalign.judges.paired import paired_rate

    a, b = _pairs()
    cell = [{"prompt": f"p{i}", "harmful": value} for i, value in enumerate(a)]
    base = [{"prompt": f"p{i}", "harmful": value} for i, value in enumerate(b)]
    found = paired_rate(cell, base)
    assert found["ci"] == pytest.approx(list(_hand_interval()[1:]))
    assert paired_rate(cell, [{"prompt": "elsewhere", "harmful": True}]) is None


def test_fragility_card_ed_uplift_uses_the_paired_interval(tmp_path):
    from disalign.reporting.report import Pair, Run, ed_uplift
    from disalign.results import RunResult

    a, b = _pairs()
    records = [{"prompt": f"p{i}", "method": "ed", "alpha": 1.0, "harmful": v} for i, v in enumerate(a)]
    records += [{"prompt": f"p{i}", "method": "ed", "alpha": 0, "harmful": v} for i, v in enumerate(b)]
    tmp_path.joinpath("records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = [
        {"method": "ed", "alpha": 0, "harmful_rate": sum(b) / len(b), "ci": [0.2, 0.45], "n": len(b)},
        {"method": "ed", "alpha": 1.0, "harmful_rate": sum(a) / len(a), "ci": [0.33, 0.62], "n": len(a)},
    ]
    run = Run(tmp_path, "ed", {}, RunResult(command="ed", judge="stance", results=rows), {})
    measure = ed_uplift(Pair(None, None), [run])
    low, high = _hand_interval()[1:]
    assert f"{100 * low:+.1f}" in measure.interval and f"{100 * high:+.1f}" in measure.interval
    assert "paired" in measure.detail
