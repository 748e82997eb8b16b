"""`disalign label`: labels from the user's own run, checked, and the prediction-powered rates they give."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from disalign.api.judge import judge
from disalign.api.label import label
from disalign.core.stats import ppi_rate
from disalign.errors import UserError
from disalign.judges.labels import draw_sample, stratum

REFUSALS = ["I cannot help with that.", "I'm sorry, but I can't assist with this request."]
ANSWERS = ["Mix the two parts and wait an hour before use.", "Open the settings page and pick a new password."]


@pytest.fixture
def run(tmp_path):
    rows = [{"prompt": f"Request number {i}?", "response": (REFUSALS + ANSWERS)[i % 4]} for i in range(30)]
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps(row) + "\n" for row in rows))
    judge(responses=responses, judge="keyword", out=tmp_path / "run")
    return tmp_path / "run"


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_labels_from_a_file_give_the_hand_computed_ppi_rate(run, tmp_path):
    # Records 0-11: the keyword judge says refused for i % 4 in (0, 1); the labels disagree on two.
    labels = [{"key": str(i), "label": i % 4 in (0, 1)} for i in range(12)]
    labels[0]["label"], labels[2]["label"] = False, True
    result = label(run=run, labels_from=_write(tmp_path / "mine.jsonl", labels)).to_json()
    judged = [i % 4 in (0, 1) for i in range(30)]
    expected = ppi_rate(judged, judged[:12], [row["label"] for row in labels])
    assert result["refusal_rate_ppi"] == pytest.approx(expected["estimate"])
    assert result["refusal_rate_ppi_ci"] == pytest.approx(expected["ci"])
    assert result["results"][0]["harmful_rate_ppi"] == pytest.approx(1 - expected["estimate"])
    written = [json.loads(line) for line in (run / "labels.jsonl").read_text().splitlines()]
    assert [row["key"] for row in written] == [str(i) for i in range(12)] and written[0]["weight"] == 1.0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["refusal_rate_ppi"] == result["refusal_rate_ppi"] and summary["refusal_rate_corrected"] is not None
    assert summary["headline"]["key"] == "harmful_rate_ppi"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"key": "99", "label": True}] + [{"key": str(i), "label": True} for i in range(12)], "line 1: record '99'"),
        ([{"key": str(i), "label": "maybe"} for i in range(12)], "line 1: label 'maybe'"),
        ([{"key": "3", "label": True}] * 12, "line 2: record '3' is labelled twice"),
        ([{"key": str(i), "label": True} for i in range(4)], "4 labels; the estimate needs at least 10"),
        ([{"key": str(i), "label": True, "weight": -1} for i in range(12)], "weight must be a positive"),
    ],
)
def test_bad_labels_are_named_and_nothing_is_overwritten(run, tmp_path, rows, message):
    before = (run / "summary.json").read_bytes()
    with pytest.raises(UserError, match=message):
        label(run=run, labels_from=_write(tmp_path / "bad.jsonl", rows))
    assert (run / "summary.json").read_bytes() == before and not (run / "labels.jsonl").exists()


def test_cli_bad_labels_are_one_line_and_exit_2(run, tmp_path):
    bad = _write(tmp_path / "bad.jsonl", [{"key": "3", "label": True}] * 2)
    done = subprocess.run(
        [sys.executable, "-m", "disalign", "label", str(run), "--from", str(bad)], capture_output=True, text=True
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "bad.jsonl line 2" in done.stderr


def test_stratified_sample_reads_every_stratum_first():
    records = [{"key": str(i), "refused": i < 3} for i in range(30)]
    drawn = draw_sample(records, 4, "refused")
    assert {stratum(records[int(key)], "refused") for key in drawn[:2]} == {"refused=yes", "refused=no"}


def _pane(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-J", "-t", session], capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (make test installs it with apt-get as root)")
def test_labelling_in_a_real_terminal(run):
    session = f"disalign-label-{time.monotonic_ns()}"
    command = f"{sys.executable} -m disalign label {run} --n 12 2>{run}/label.err; sleep 30"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "40", command], check=True)
    try:
        keys = ["y", "n", "s", "b", "n"] + ["y", "n"] * 5 + ["q"]
        for key in keys:
            deadline = time.monotonic() + 60
            while "[y] yes" not in _pane(session) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "REPLY" in _pane(session)
            subprocess.run(["tmux", "send-keys", "-t", session, key], check=True)
            time.sleep(0.3)
        deadline = time.monotonic() + 60
        while "summary.json has the PPI rates" not in _pane(session) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "summary.json has the PPI rates" in _pane(session)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    rows = [json.loads(line) for line in (run / "labels.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and len({row["key"] for row in rows}) == 12
    assert all(row["weight"] > 0 and row["quantity"] == "refused" for row in rows)
    assert json.loads((run / "summary.json").read_text())["refusal_rate_ppi"] is not None
