import json

import pytest

from disalign.core.runs import RunDir
from disalign.errors import UserError


def test_records_append_and_resume(tmp_path):
    run = RunDir(tmp_path / "run", "eval", {"model": "m", "seed": 1})
    run.append([{"key": "a", "value": 1}, {"key": "b", "value": 2}])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["command"] == "eval" and config["config"] == {"model": "m", "seed": 1}
    assert "torch" in config["versions"]

    resumed = RunDir(tmp_path / "run", "eval", {"model": "m", "seed": 1})
    assert resumed.is_done("a") and resumed.is_done("b") and not resumed.is_done("c")
    assert [r["value"] for r in resumed.records()] == [1, 2]


def test_torn_last_line_is_dropped_on_resume(tmp_path):
    run = RunDir(tmp_path, "eval", {})
    run.append([{"key": "a"}])
    with (tmp_path / "records.jsonl").open("a") as handle:
        handle.write('{"key": "b", "val')
    resumed = RunDir(tmp_path, "eval", {})
    resumed.append([{"key": "c"}])
    assert [r["key"] for r in resumed.records()] == ["a", "c"]


def test_foreign_or_mismatched_directories_are_refused(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        RunDir(tmp_path / "other", "eval", {})
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"

    RunDir(tmp_path / "run", "eval", {"seed": 1})
    with pytest.raises(UserError, match="different configuration"):
        RunDir(tmp_path / "run", "eval", {"seed": 2})
    with pytest.raises(UserError, match="holds a 'eval' run"):
        RunDir(tmp_path / "run", "ed", {"seed": 1})
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        RunDir(tmp_path / "file", "eval", {})
