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

    RunDir(tmp_path / "run", "eval", {"seed": 1}).append([{"key": "a"}])
    with pytest.raises(UserError, match="'seed' \\(1 -> 2\\) differs"):
        RunDir(tmp_path / "run", "eval", {"seed": 2})
    with pytest.raises(UserError, match="holds a 'eval' run"):
        RunDir(tmp_path / "run", "ed", {"seed": 1})
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        RunDir(tmp_path / "file", "eval", {})


def test_a_run_claims_its_directory_only_when_it_first_writes(tmp_path):
    RunDir(tmp_path / "run", "eval", {"model": "wrong"})  # e.g. the model then fails to load
    assert not (tmp_path / "run").exists()
    run = RunDir(tmp_path / "run", "eval", {"model": "right"})
    run.append([{"key": "a"}])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"] == {"model": "right"}


def test_changed_inputs_are_named_and_overwrite_starts_afresh(tmp_path):
    RunDir(tmp_path, "eval", {}, inputs={"prompts": "aaa"}).append([{"key": "a"}])
    with pytest.raises(UserError, match='input \'prompts\' \\("aaa" -> "bbb"\\) differs'):
        RunDir(tmp_path, "eval", {}, inputs={"prompts": "bbb"})
    fresh = RunDir(tmp_path, "eval", {}, inputs={"prompts": "bbb"}, overwrite=True)
    assert not fresh.is_done("a") and list(fresh.records()) == []


def test_in_memory_runs_write_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = RunDir(None, "eval", {})
    run.append([{"key": "a", "response": "x"}])
    run.write_summary({"n": 1})
    assert run.is_done("a") and [r["key"] for r in run.records()] == ["a"] and run.summary == {"n": 1}
    assert list(tmp_path.iterdir()) == []


def test_records_split_on_newlines_only_and_a_corrupt_middle_line_is_one_error(tmp_path):
    run = RunDir(tmp_path, "eval", {})
    run.append([{"key": "a", "text": "line\u2028separator\u0085next"}, {"key": "b"}])
    assert [r["text"] for r in RunDir(tmp_path, "eval", {}).records() if r["key"] == "a"] == [
        "line\u2028separator\u0085next"
    ]
    first, second, _ = (tmp_path / "records.jsonl").read_text().split("\n")
    (tmp_path / "records.jsonl").write_text(first[:10] + "\n" + second + "\n")
    with pytest.raises(UserError, match="line 1 is corrupt"):
        RunDir(tmp_path, "eval", {})
