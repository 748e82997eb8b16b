"""A user's mistake gets one line on stderr and exit status 2, never a traceback."""

import json
import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest

from disalign.cli.main import main


@pytest.fixture
def disalign(monkeypatch, capsys):
    """Run the CLI in-process (fast) and return its exit code and output."""

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["disalign", *args])
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code or 0
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run


def test_console_entry_point_reports_user_errors(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "disalign", "world", "eval", "--world", str(tmp_path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert_user_error(result, "not a world zoo")


def assert_user_error(result, fragment):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]


def test_help_lists_verbs(disalign):
    result = disalign("--help")
    assert result.returncode == 0
    for verb in ("demo", "world"):
        assert verb in result.stdout


def test_every_command_group_says_what_it_is_for():
    from disalign.cli.main import app

    groups = {group.name: group.typer_instance.info.help for group in app.registered_groups}
    assert {"world", "analyze", "beb"} <= set(groups)
    assert all(groups.values()), groups


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"world": {"harmful_share": 2}}, "harmful_share"),
        ({"world": {"n_operators": 0}}, "n_operators"),
        ({"typo": 1}, "typo"),
        ({"train": {"pretrain_average_decay": 1}}, "pretrain_average_decay"),
    ],
)
def test_bad_world_config(disalign, tmp_path, config, fragment):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert_user_error(disalign("world", "build", "--out", str(tmp_path / "zoo"), "--config", str(path)), fragment)
    assert not (tmp_path / "zoo").exists()


def test_corrupt_config_file(disalign, tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    assert_user_error(
        disalign("world", "build", "--out", str(tmp_path / "zoo"), "--config", str(path)), "not valid JSON"
    )


def test_output_directory_holding_something_else(disalign, tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    assert_user_error(disalign("world", "build", "--out", str(tmp_path), "--quick"), "not empty")
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_missing_zoo(disalign, tmp_path):
    assert_user_error(
        disalign("world", "eval", "--world", str(tmp_path / "nope"), "--out", str(tmp_path / "o")), "not a world zoo"
    )


def test_the_cli_hides_the_deprecation_warning_peft_raises_through_transformers():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from disalign.cli.main import _silence_library_deprecations

    shape = {"hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2, "num_key_value_heads": 2}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _silence_library_deprecations()
        get_peft_model(LlamaForCausalLM(LlamaConfig(vocab_size=16, num_hidden_layers=1, **shape)), LoraConfig(r=2))
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []


def test_help_shows_every_default(disalign, monkeypatch):
    from disalign.core.verbs import VERBS

    monkeypatch.setenv("COLUMNS", "400")  # one line per option
    for name, verb in VERBS.items():
        result = disalign(*name.split(), "--help")
        assert result.returncode == 0, result.stderr
        lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ --")}
        for field_name, field in verb.config.model_fields.items():
            line = lines["--" + (field.alias or field_name).replace("_", "-")]
            assert ("[default:" in line) != field.is_required(), f"{name}: {line}"
    assert "Sampling temperature; 0 is greedy. [default: (1.0)]" in disalign("eval", "--help").stdout
