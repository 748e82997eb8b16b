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


def test_a_claim_stopped_while_writing_its_config_does_not_lock_the_folder_out(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json.tmp").write_text('{"command": "ev')
    RunDir(tmp_path / "run", "eval", {}).append([{"key": "a"}])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["command"] == "eval"
    assert not (tmp_path / "run" / "config.json.tmp").exists()


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


def test_overwrite_refuses_a_folder_disalign_did_not_write(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "command": "eval", "config": {}}))
    (model / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(UserError, match="config.json that disalign did not write"):
        RunDir(model, "eval", {}, overwrite=True)
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "model.safetensors"]


def test_overwrite_empties_a_disalign_run_of_everything(tmp_path):
    run = RunDir(tmp_path / "run", "eval", {"seed": 1})
    run.append([{"key": "a"}])
    run.file("plots").mkdir()
    (tmp_path / "run" / "plots" / "a.png").write_bytes(b"png")
    del run
    fresh = RunDir(tmp_path / "run", "ed", {"seed": 2}, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"] and list(fresh.records()) == []


@pytest.mark.parametrize(("out", "where"), [("m", "is"), ("m/run", "lies inside"), (".", "holds")])
def test_a_folder_that_is_holds_or_lies_inside_an_input_is_refused(tmp_path, monkeypatch, out, where):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    with pytest.raises(UserError, match=f"{where} the run's input m"):
        RunDir(tmp_path / out, "eval", {}, input_paths=["m"])


def test_a_folder_another_process_runs_in_is_refused_naming_it(tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_RUN, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(UserError, match=f"another disalign run is writing there \\(process {holder.pid}\\)"):
            RunDir(tmp_path / "run", "eval", {})
        with pytest.raises(UserError, match=f"process {holder.pid}"):
            RunDir(tmp_path / "run", "eval", {}, overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    assert [r["key"] for r in RunDir(tmp_path / "run", "eval", {}).records()] == ["a"]


HOLD_A_RUN = """
import sys, time
from disalign.core.runs import RunDir
run = RunDir(sys.argv[1], "eval", {})
run.append([{"key": "a"}])
print("holding", flush=True)
time.sleep(600)
"""


def test_any_text_json_accepts_is_written_so_that_it_reads_back_the_same(tmp_path):
    odd = json.loads('"half a pair \\ud800, the other half \\udc00"')
    run = RunDir(tmp_path / "run", "judge", {})
    run.append([{"key": "a", "reason": odd}, {"key": "b", "reason": "café\u2028"}])
    run.write_summary({"note": odd})
    assert [r["reason"] for r in RunDir(tmp_path / "run", "judge", {}).records()] == [odd, "café\u2028"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["note"] == odd
    assert "café" in (tmp_path / "run" / "records.jsonl").read_text(encoding="utf-8")  # readable where it can be
