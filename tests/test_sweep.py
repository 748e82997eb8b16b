import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from disalign.errors import UserError
from disalign.lab.sweep import TABLE, cell_name, expand, load_spec, run_sweep

TESTS = Path(__file__).parent
VERB = "sweep_verbs:coin_flips"


def spec_for(out, **changes):
    spec = {"verb": VERB, "out": str(out), "config": {"n": 4, "p": 0.5}, "grid": {"seed": [0, 1, 2]}}
    spec.update(changes)
    return spec


def table(out):
    return [json.loads(line) for line in (Path(out) / TABLE).read_text().splitlines()]


def calls(out, cell):
    return len((Path(out) / "cells" / f"{cell}.calls").read_text().splitlines())


@pytest.fixture(autouse=True)
def verbs_importable(monkeypatch):
    """Pool and Ray workers find the test verb module through PYTHONPATH, as a user's would."""
    paths = [str(TESTS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.syspath_prepend(str(TESTS))


def test_grid_expands_in_order_with_readable_cell_names(tmp_path):
    spec = load_spec(spec_for(tmp_path, grid={"shots": [10, 50], "epochs": [1, 5]}))
    cells = expand(spec)
    assert [c.coordinates for c in cells] == [
        {"shots": 10, "epochs": 1},
        {"shots": 10, "epochs": 5},
        {"shots": 50, "epochs": 1},
        {"shots": 50, "epochs": 5},
    ]
    assert cells[1].name == "shots=10,epochs=5"
    assert cells[1].config == {
        "n": 4,
        "p": 0.5,
        "shots": 10,
        "epochs": 5,
        "out": str(tmp_path / "cells" / cells[1].name),
    }
    # A value that is itself a list (ED's alpha) is swept as a list of lists; odd characters get a hash.
    assert cell_name({"alpha": [0, 1]}).startswith("alpha=_0,1_-")
    assert cell_name({"model": "runs/zoo/sft"}).startswith("model=runs_zoo_sft-")
    assert cell_name({"model": "a/b"}) != cell_name({"model": "a_b"})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"grid": {}}, "empty grid"),
        ({"grid": {"seed": []}}, "'seed' has no values"),
        ({"seeds": [1]}, "seeds: Extra inputs are not permitted"),
        ({"executor": "slurm"}, "executor"),
        ({"verb": "nonsense"}, "unknown verb 'nonsense'"),
        ({"verb": "no_such_module:f"}, "cannot be imported"),
        ({"config": {"seed": 3}}, "'seed' is both in config and in grid"),
        ({"config": {"out": "x"}}, "'out' is set by the sweep"),
        ({"grid": {"seed": [1, 1]}}, "share the coordinates"),
        # A registered verb's config is checked for every cell before any runs.
        (
            {"verb": "eval", "config": {"model": "m", "prompts": "p"}, "grid": {"temprature": [0, 1]}},
            "cell temprature=0: temprature: Extra inputs are not permitted",
        ),
        ({"verb": "eval", "config": {"prompts": "p"}, "grid": {"seed": [0]}}, "cell seed=0: model: Field required"),
    ],
)
def test_bad_specs_are_one_line_errors(tmp_path, changes, message):
    with pytest.raises(UserError, match=message) as caught:
        run_sweep(spec_for(tmp_path / "out", **changes))
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_spec_files_in_yaml_or_json(tmp_path):
    (tmp_path / "spec.yaml").write_text(f"verb: {VERB}\nout: {tmp_path / 'out'}\ngrid:\n  seed: [0, 1]\n")
    assert load_spec(tmp_path / "spec.yaml").grid == {"seed": [0, 1]}
    (tmp_path / "spec.json").write_text(json.dumps(spec_for(tmp_path / "out")))
    assert load_spec(tmp_path / "spec.json", workers=3).workers == 3
    (tmp_path / "list.yaml").write_text("- verb\n")
    with pytest.raises(UserError, match="a sweep spec is a mapping"):
        load_spec(tmp_path / "list.yaml")
    with pytest.raises(UserError, match="file not found"):
        load_spec(tmp_path / "missing.yaml")


def test_sweep_collects_rows_and_skips_done_cells(tmp_path):
    out = tmp_path / "sweep"
    result = run_sweep(spec_for(out))
    assert result.failed == 0 and [c["status"] for c in result.cells] == ["ok"] * 3
    rows = table(out)
    assert [(r["cell"], r["seed"], r["status"]) for r in rows] == [(f"seed={s}", s, "ok") for s in range(3)]
    for row in rows:
        flips = [json.loads(line)["harmful"] for line in (out / "cells" / row["cell"] / "records.jsonl").open()]
        assert row["harmful_rate"] == sum(flips) / 4 and row["n"] == 4 and len(row["ci"]) == 2
    with (out / "sweep.csv").open() as handle:
        written = list(csv.DictReader(handle))
    assert [float(r["harmful_rate"]) for r in written] == [r["harmful_rate"] for r in rows]
    assert {"ci_low", "ci_high"} <= set(written[0])
    pandas = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    assert pandas.read_parquet(out / "sweep.parquet")["seed"].tolist() == [0, 1, 2]

    again = run_sweep(spec_for(out, grid={"seed": [0, 1, 2, 3]}))
    assert [calls(out, f"seed={s}") for s in range(4)] == [1, 1, 1, 1]
    assert [r["seed"] for r in table(out)] == [0, 1, 2, 3] and again.failed == 0


def test_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "sweep"
    result = run_sweep(spec_for(out, grid={"fail": [False, True], "seed": [0, 1]}))
    assert result.failed == 2
    rows = table(out)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed"]
    assert rows[2]["error"] == "RuntimeError: cell with seed 0 fails on purpose"
    failures = [json.loads(line) for line in (out / "records.jsonl").open() if '"failed"' in line]
    assert len(failures) == 2 and "Traceback" in failures[0]["traceback"] and "key" not in failures[0]
    run_sweep(spec_for(out, grid={"fail": [False, True], "seed": [0, 1]}))
    assert calls(out, "fail=false,seed=0") == 1 and calls(out, "fail=true,seed=0") == 2


@pytest.mark.slow  # each worker imports disalign (torch, transformers): tens of seconds on a busy machine
def test_process_pool_gives_the_sequential_table(tmp_path):
    run_sweep(spec_for(tmp_path / "one"))
    pooled = run_sweep(spec_for(tmp_path / "pool", workers=2))
    assert pooled.failed == 0
    assert table(tmp_path / "pool") == table(tmp_path / "one")


@pytest.mark.slow
def test_ray_executor_gives_the_sequential_table(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (make test installs it; pip install 'disalign[ray]')")
    run_sweep(spec_for(tmp_path / "one", grid={"seed": [0, 1, 2], "fail": [False, True]}))
    on_ray = run_sweep(
        spec_for(tmp_path / "ray", grid={"seed": [0, 1, 2], "fail": [False, True]}, executor="ray", workers=2)
    )
    assert on_ray.failed == 3
    assert table(tmp_path / "ray") == table(tmp_path / "one")


def test_ray_absent_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(UserError, match="Ray is not installed"):
        run_sweep(spec_for(tmp_path / "out", executor="ray"))


@pytest.mark.slow  # a fresh process imports disalign before the first cell
def test_sigkill_mid_sweep_then_rerun_equals_an_uninterrupted_sweep(tmp_path):
    grid = {"seed": [0, 1, 2, 3, 4]}
    config = {"n": 6, "p": 0.5, "delay": 0.05}
    run_sweep(spec_for(tmp_path / "whole", grid=grid, config=config))

    out = tmp_path / "killed"
    (tmp_path / "spec.json").write_text(json.dumps(spec_for(out, grid=grid, config=config)))
    script = "import sys; from disalign.lab.sweep import run_sweep; run_sweep(sys.argv[1])"
    process = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "spec.json")], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    # Kill once two cells are done and the third has some of its records but not all.
    third = out / "cells" / "seed=2" / "records.jsonl"
    while time.monotonic() < deadline and not (third.exists() and third.read_text().count("\n") >= 2):
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert 0 < third.read_text().count("\n") < 6 and not (out / TABLE).exists()

    result = run_sweep(tmp_path / "spec.json")
    assert result.failed == 0
    assert table(out) == table(tmp_path / "whole")
    for seed in grid["seed"]:
        cell = f"seed={seed}"
        assert (out / "cells" / cell / "records.jsonl").read_text() == (
            tmp_path / "whole" / "cells" / cell / "records.jsonl"
        ).read_text()
    done = [json.loads(line)["key"] for line in (out / "records.jsonl").open()]
    assert sorted(done) == sorted(json.dumps({"seed": s}) for s in grid["seed"])
    assert calls(out, "seed=0") == 1 and calls(out, "seed=2") == 2


def cli(monkeypatch, *args):
    from disalign.cli.main import main

    monkeypatch.setattr(sys, "argv", ["disalign", *args])
    try:
        main()
    except SystemExit as exit:
        return exit.code
    return 0


def test_cli_exit_status_says_whether_every_cell_finished(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"verb: {VERB}\nout: {tmp_path / 'out'}\ngrid:\n  fail: [false, true]\n  seed: [0]\n")
    assert cli(monkeypatch, "sweep", "--spec", str(spec)) == 1
    assert "status=ok" in capsys.readouterr().out
    spec.write_text(f"verb: {VERB}\nout: {tmp_path / 'out'}\ngrid:\n  seed: [0, 1]\n")
    assert cli(monkeypatch, "sweep", "--spec", str(spec), "--workers", "1") == 0
    spec.write_text(f"verb: {VERB}\nout: {tmp_path / 'out'}\ngrid: {{}}\n")
    capsys.readouterr()
    assert cli(monkeypatch, "sweep", "--spec", str(spec)) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "disalign: error: sweep spec: empty grid: list at least one field with its values"
    ]
