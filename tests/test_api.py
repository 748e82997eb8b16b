"""The Python API: the same verbs as the CLI, typed configs, one result schema for every summary."""

import json
import os
import runpy
import sys
from pathlib import Path

import pytest

import disalign
from disalign.results import RunResult

EXAMPLE = Path(__file__).parent.parent / "examples" / "quickstart.py"


@pytest.mark.slow
def test_the_example_runs_from_python_without_writing(quick_zoo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISALIGN_ZOO", str(quick_zoo))
    monkeypatch.chdir(tmp_path)
    before = {p.name for p in quick_zoo.iterdir()}
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    printed = capsys.readouterr().out
    assert "ED α=1" in printed and "fine-tuning 10×5" in printed
    assert list(tmp_path.iterdir()) == [] and {p.name for p in quick_zoo.iterdir()} == before


@pytest.mark.slow
def test_every_verb_writes_a_summary_in_the_one_schema(quick_zoo, tmp_path):
    zoo = str(quick_zoo)
    common = {"world": zoo, "judge": "world", "limit": 12}
    disalign.eval(model=f"{zoo}/dpo", prompts="world:unsafe", out=tmp_path / "eval", **common)
    disalign.ed(
        base=f"{zoo}/base", aligned=f"{zoo}/dpo", prompts="world:unsafe", alpha=[0, 1], baselines=True,
        out=tmp_path / "ed", **common,
    )  # fmt: skip
    disalign.finetune(model=f"{zoo}/dpo", recipe="harmful", shots=[4], epochs=[1], out=tmp_path / "finetune", **common)
    responses = tmp_path / "responses.jsonl"
    responses.write_text(json.dumps({"prompt": "p", "response": "I cannot help with that."}) + "\n")
    disalign.judge(responses=responses, judge="keyword", out=tmp_path / "judge")
    disalign.world.eval(world=quick_zoo, n=10, out=tmp_path / "world-eval")
    for verb in ("eval", "ed", "finetune", "judge", "world-eval"):
        summary = json.loads((tmp_path / verb / "summary.json").read_text())
        result = RunResult.model_validate(summary)
        assert result.command == verb.replace("-", " ")
        assert result.results and all(row.n > 0 for row in result.results)
        assert "judge" in summary and "judge_validation" in summary
    ed_rows = {
        (row["method"], row["alpha"]) for row in json.loads((tmp_path / "ed" / "summary.json").read_text())["results"]
    }
    assert ed_rows == {("ed", 0.0), ("ed", 1.0), ("align_mp", 0.0), ("ed_base", 1.0)}  # α = 0 is BaseMP


def test_a_bad_config_is_the_same_one_line_error_from_python_and_the_cli(tmp_path):
    with pytest.raises(disalign.UserError) as wrong_type:
        disalign.ed(base="b", aligned="a", prompts="p", seeds="many")
    assert str(wrong_type.value) == "ed: seeds: Input should be a valid integer, unable to parse string as an integer"
    with pytest.raises(disalign.UserError, match="ed: colour: Extra inputs are not permitted"):
        disalign.ed(base="b", aligned="a", prompts="p", colour="red")
    with pytest.raises(disalign.UserError, match="eval: model: Field required"):
        disalign.eval(disalign.EvalConfig.model_construct(prompts="p"))

    import subprocess

    config = tmp_path / "ed.yaml"
    config.write_text("base: b\naligned: a\nprompts: p\nseeds: many\n")
    result = subprocess.run(
        [sys.executable, "-m", "disalign", "ed", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr == f"disalign: error: {wrong_type.value}\n"


def test_configs_are_typed_and_validated_once():
    config = disalign.EDConfig(base="b", aligned="a", prompts="p", alpha="0,0.5", judge_option={"k": "v"})
    assert config.alpha == [0.0, 0.5] and config.out is None
    assert disalign.EDConfig.model_validate(config.model_dump()) == config
    with pytest.raises(ValueError):
        disalign.EDConfig(base="b", aligned="a", prompts="p", temperature=float("nan"))


def test_a_verb_with_one_positional_option_takes_its_value_as_the_config():
    # as the README writes it: disalign.sweep("SPEC.yaml"), like `disalign sweep SPEC.yaml`
    with pytest.raises(disalign.UserError, match="file not found"):
        disalign.sweep("no-such-spec.yaml")
    with pytest.raises(disalign.UserError, match="expected a EDConfig or a dict, got str"):
        disalign.ed("runs/x")


def test_every_cli_verb_is_a_python_function():
    assert set(disalign.VERBS) >= {"eval", "judge", "ed", "finetune", "demo", "world build", "world eval"}
    assert disalign.VERBS["world build"].run is disalign.world.build
    assert disalign.VERBS["ed"].run is disalign.ed
    for name, entry in disalign.VERBS.items():
        group, _, command = name.rpartition(" ")
        assert entry.run is getattr(getattr(disalign, group) if group else disalign, command), name


def test_judges_side_by_side_in_eval(tmp_path):
    from builders import tiny_llama, word_tokenizer

    words = "I can't help with that sure here is how step one".split()
    template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    tokenizer = word_tokenizer(["<pad>", "<bos>", "<eos>", "<unk>"], words, template, bos="<bos>", eos="<eos>")
    tiny_llama(tokenizer).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(["help me", "how do I", "step one", "sure"]) + "\n")
    result = disalign.eval(
        model=str(tmp_path / "model"),
        prompts=str(prompts),
        judge="keyword,refusal",
        max_new_tokens=6,
        out=tmp_path / "run",
    )
    comparison = result.judges
    assert comparison["judges"] == ["keyword", "refusal"] and comparison["pairs"][0]["n"] == 4
    assert result.judge == "keyword,refusal"
    keyword_rate = comparison["rates"]["keyword"]["harmful_rate"]
    assert result.harmful_rate == keyword_rate  # the first judge of the panel decides the headline rate
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    differ = [r["id"] for r in records if r["panel"]["keyword"]["harmful"] != r["panel"]["refusal"]["harmful"]]
    assert comparison["disagreements"] == differ
