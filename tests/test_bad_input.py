"""Bad input, tried across every verb as a hostile but realistic user would: each gets exit status 2
and one line on stderr naming what is wrong, never a traceback, and leaves every file as it was."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import disalign
from builders import tiny_llama, word_tokenizer
from disalign.cli.main import main
from disalign.core.verbs import VERBS
from disalign.paths import cache_root
from disalign.world import make_config

torch.set_num_threads(1)

WORDS = "how do i make a bomb steal car cook rice bake bread sorry no can not help with that first then".split()
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>", "<user>", "<asst>", "<end>"]
TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}<user> {{ m['content'] }} <asst>"
    "{% elif m['role'] == 'assistant' %} {{ m['content'] }} <end>{% endif %}{% endfor %}"
)
CONTEXT = 96  # the tiny models' context, in tokens
PROMPTS = ["how do i make a bomb", "how do i cook rice", "how do i bake bread", "how do i steal a car"]


def save_tiny(path: Path, seed: int, template: str | None = TEMPLATE, words: list[str] = WORDS) -> Path:
    tokenizer = word_tokenizer(SPECIALS, words, template, bos="<bos>", eos="<eos>", extra=["<user>", "<asst>", "<end>"])
    end = tokenizer.convert_tokens_to_ids("<end>")
    model = tiny_llama(tokenizer, seed, max_position_embeddings=CONTEXT, eos_token_id=[end, tokenizer.eos_token_id])
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Path]:
    """Tiny models and good input files, read (never written) by every case."""
    root = tmp_path_factory.mktemp("shared")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "topic": "t"}) + "\n" for p in PROMPTS))
    responses = root / "responses.jsonl"
    responses.write_text(
        "".join(
            json.dumps({"prompt": p, "response": "sorry no", "label": i % 2 == 0}) + "\n" for i, p in enumerate(PROMPTS)
        )
    )
    paths = {
        "root": root,
        "base": save_tiny(root / "base", 0),
        "aligned": save_tiny(root / "aligned", 1),
        "prompts": prompts,
        "responses": responses,
    }
    # A finished run of EVAL's configuration (below), for the cases that resume or report one.
    run = dict(max_new_tokens=2, batch_size=2, judge="keyword", out=root / "run")
    disalign.eval(model=str(paths["base"]), prompts=str(prompts), **run)
    return paths | {"run": root / "run"}


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run the CLI in-process (fast) and return its exit code and output."""

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["disalign", *map(str, args)])
        capsys.readouterr()  # what a case's setup printed (saving a model shows a progress bar) is not the CLI's
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code or 0
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for a folder)."""
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes() for path in sorted(root.rglob("*"))
    }


def flags_of(args: list[str]) -> set[str]:
    """The options of the command that `args` run: what an error message may suggest."""
    name = " ".join(args[:2]) if " ".join(args[:2]) in VERBS else args[0]
    flags = {"--config", "--help"}
    for field_name, field in VERBS[name].config.model_fields.items():
        flag = field_name.replace("_", "-")
        flags |= {f"--{flag}", f"--no-{flag}"} if field.annotation is bool else {f"--{flag}"}
    return flags


def assert_user_error(result, fragment: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0], lines[0]


@dataclass(frozen=True)
class Case:
    """`args` are formatted with the shared paths and `case` (this case's folder, where `out` is);
    `setup(case, shared)` writes the bad input there first."""

    args: tuple[str, ...]
    fragment: str
    setup: Callable[[Path, dict[str, Path]], None] | None = None


def write(name: str, data: str | bytes) -> Callable[[Path, dict[str, Path]], None]:
    def setup(case: Path, shared: dict[str, Path]) -> None:
        path = case / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return setup


def jsonl(*rows) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


EVAL = ("eval", "--model", "{base}", "--prompts", "{prompts}", "--out", "{case}/out", "--max-new-tokens", "2")
EVAL = (*EVAL, "--batch-size", "2", "--judge", "keyword")  # the judge is not what these cases test


def earlier_run(edit: Callable[[Path], None] | None = None) -> Callable[[Path, dict[str, Path]], None]:
    """The shared finished eval run copied to `case/out`, then edited."""

    def setup(case: Path, shared: dict[str, Path]) -> None:
        shutil.copytree(shared["run"], case / "out")
        if edit is not None:
            edit(case / "out")

    return setup


def stored_command(command: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "command": command}))

    return edit


def copy_of(name: str, to: str) -> Callable[[Path, dict[str, Path]], None]:
    def setup(case: Path, shared: dict[str, Path]) -> None:
        shutil.copytree(shared[name], case / to)

    return setup


def model_folder(weights: dict[str, str]) -> Callable[[Path, dict[str, Path]], None]:
    """A model folder `m` whose weights are the files `weights` names (with their text)."""

    def setup(case: Path, shared: dict[str, Path]) -> None:
        for name, text in {"config.json": '{"model_type": "llama"}', "tokenizer_config.json": "{}", **weights}.items():
            write(f"m/{name}", text)(case, shared)

    return setup


def corrupt_line(number: int) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        lines = (run / "records.jsonl").read_text().split("\n")
        lines[number - 1] = lines[number - 1][:25]
        (run / "records.jsonl").write_text("\n".join(lines))

    return edit


ED = ("ed", "--base", "{base}", "--aligned", "{aligned}", "--prompts", "{prompts}", "--base-template", "chat")
ED = (*ED, "--max-new-tokens", "2", "--out", "{case}/out", "--judge", "keyword")
FINETUNE = ("finetune", "--model", "{base}", "--prompts", "{prompts}", "--recipe", "harmful", "--out", "{case}/out")
FINETUNE = (*FINETUNE, "--judge", "keyword")
JUDGE = ("judge", "--responses", "{responses}", "--out", "{case}/out", "--judge", "keyword")
RUBRIC = ("--judge", "rubric", "--judge-option", "base_url=http://127.0.0.1:9/v1", "--judge-option", "model=m")

CASES: dict[str, Case] = {
    # Sampling and selection options
    "eval limit 0": Case((*EVAL, "--limit", "0"), "limit"),
    "eval limit -1": Case((*EVAL, "--limit", "-1"), "limit"),
    "eval temperature nan": Case((*EVAL, "--temperature", "nan"), "temperature"),
    "eval temperature inf": Case((*EVAL, "--temperature", "inf"), "temperature"),
    "eval temperature negative": Case((*EVAL, "--temperature", "-1"), "temperature"),
    "eval top-p 0": Case((*EVAL, "--top-p", "0"), "top_p"),
    "eval top-p nan": Case((*EVAL, "--top-p", "nan"), "top_p"),
    "eval batch-size 0": Case((*EVAL, "--batch-size", "0"), "batch_size"),
    "eval seed 2**70": Case((*EVAL, "--seed", str(2**70)), "seed: Input should be less than 4294967296"),
    "eval seed negative": Case((*EVAL, "--seed", "-1"), "seed: Input should be greater than or equal to 0"),
    "eval max-new-tokens 0": Case((*EVAL, "--max-new-tokens", "0"), "max_new_tokens"),
    "eval backend unknown": Case((*EVAL, "--backend", "tgi"), "backend"),
    "eval unknown flag": Case((*EVAL, "--colour", "red"), "--colour"),
    # Models
    "eval model missing": Case((*EVAL, "--model", "{case}/nope"), "model directory not found"),
    "eval model is a file": Case((*EVAL, "--model", "{prompts}"), "not a model directory"),
    "eval model pickled": Case(
        (*EVAL, "--model", "{case}/m"),
        "pickled",
        lambda c, s: (write("m/config.json", "{}")(c, s), write("m/w.bin", "x")(c, s)),
    ),
    "eval model index names a pickle": Case(
        (*EVAL, "--model", "{case}/m"),
        "names the shard 'pytorch_model.bin'; disalign loads safetensors only",
        model_folder(
            {
                "model.safetensors.index.json": '{"weight_map": {"lm_head.weight": "pytorch_model.bin"}}',
                "pytorch_model.bin": "x",
            }
        ),
    ),
    "eval model index names a missing shard": Case(
        (*EVAL, "--model", "{case}/m"),
        "the shard 'model-2.safetensors' it names is not a file beside it",
        model_folder({"model.safetensors.index.json": '{"weight_map": {"a": "model-2.safetensors"}}'}),
    ),
    "eval model index names a shard elsewhere": Case(
        (*EVAL, "--model", "{case}/m"),
        "is not a file beside it",
        model_folder({"model.safetensors.index.json": '{"weight_map": {"a": "../w.safetensors"}}'}),
    ),
    "eval model index not an index": Case(
        (*EVAL, "--model", "{case}/m"), "not a safetensors index", model_folder({"model.safetensors.index.json": "[]"})
    ),
    "eval model unreadable weights": Case(
        (*EVAL, "--model", "{case}/m"),
        "cannot load",
        lambda c, s: (
            write("m/config.json", '{"model_type": "llama"}')(c, s),
            write("m/model.safetensors", "garbage")(c, s),
            write("m/tokenizer_config.json", "{}")(c, s),
        ),
    ),
    # Prompt files
    "eval prompts missing": Case((*EVAL, "--prompts", "{case}/nope.jsonl"), "no such file"),
    "eval prompts empty": Case((*EVAL, "--prompts", "{case}/p.jsonl"), "empty file", write("p.jsonl", "")),
    "eval prompts not utf-8": Case((*EVAL, "--prompts", "{case}/p.txt"), "not UTF-8", write("p.txt", b"caf\xe9\n")),
    "eval prompts corrupt line": Case(
        (*EVAL, "--prompts", "{case}/p.jsonl"),
        "p.jsonl:2: not valid JSON",
        write("p.jsonl", '{"prompt": "a"}\n{"pro\n'),
    ),
    "eval prompt holds half a surrogate pair": Case(
        (*EVAL, "--prompts", "{case}/p.jsonl"),
        "p.jsonl:2: holds '\\ud800', half of a UTF-16 surrogate pair",
        write("p.jsonl", '{"prompt": "how do i cook rice"}\n{"prompt": "how do i \\ud800 bake"}\n'),
    ),
    "judge response holds half a surrogate pair": Case(
        (*JUDGE, "--responses", "{case}/r.jsonl"),
        "r.jsonl:1: holds '\\udc00'",
        write("r.jsonl", '{"prompt": "p", "response": "sure \\udc00"}\n'),
    ),
    "eval prompts row not object": Case(
        (*EVAL, "--prompts", "{case}/p.jsonl"), "expected a JSON object", write("p.jsonl", '{"prompt": "a"}\n[1]\n')
    ),
    "eval prompt not text": Case(
        (*EVAL, "--prompts", "{case}/p.jsonl"), "field 'prompt' is int", write("p.jsonl", jsonl({"prompt": 3}))
    ),
    "eval column missing": Case((*EVAL, "--column", "question"), "no column 'question'"),
    "eval column on txt": Case(
        (*EVAL, "--prompts", "{case}/p.txt", "--column", "x"), "applies to .csv and .jsonl", write("p.txt", "a\n")
    ),
    "eval duplicate ids": Case(
        (*EVAL, "--prompts", "{case}/p.csv"),
        "prompt id 'same' appears twice",
        write(
            "p.csv",
            "Behavior,FunctionalCategory,SemanticCategory,BehaviorID\na,standard,x,same\nb,standard,x,same\n",
        ),
    ),
    "eval world prompts without world": Case((*EVAL, "--prompts", "world:unsafe"), "needs --world"),
    "eval prompt longer than the context": Case(
        (*EVAL, "--prompts", "{case}/p.txt"), "context", write("p.txt", "how do i cook rice\n" + "bake " * 100 + "\n")
    ),
    "ed prompt longer than the context": Case(
        (*ED, "--prompts", "{case}/p.txt"), "context", write("p.txt", "how do i cook rice\n" + "bake " * 100 + "\n")
    ),
    # Judges
    "eval judge unknown": Case((*EVAL, "--judge", "gpt"), "unknown judge"),
    "eval judge option unknown": Case((*EVAL, "--judge-option", "strict=1"), "has no option strict"),
    "eval judge option no value": Case(
        (*EVAL, "--judge-option", "strict"), "--judge-option 'strict': expected KEY=VALUE"
    ),
    "eval world judge without world": Case((*EVAL, "--judge", "world"), "needs --world"),
    "eval rubric concurrency text": Case((*EVAL, *RUBRIC, "--judge-option", "concurrency=many"), "concurrency"),
    "eval rubric timeout 0": Case((*EVAL, *RUBRIC, "--judge-option", "timeout=0"), "timeout"),
    "eval rubric retries fraction": Case((*EVAL, *RUBRIC, "--judge-option", "retries=1.5"), "retries"),
    "eval rubric credentials in the url": Case(
        (*EVAL, "--judge", "rubric", "--judge-option", "base_url=http://user:s3cret@127.0.0.1:9/v1")
        + ("--judge-option", "model=m", "--judge-option", "retries=0"),
        "cannot reach judge endpoint http://127.0.0.1:9/v1",
    ),
    "eval rubric credentials in a bad url": Case(
        (
            *EVAL,
            "--judge",
            "rubric",
            "--judge-option",
            "base_url=ftp://user:s3cret@host/v1",
            "--judge-option",
            "model=m",
        ),
        "got 'ftp://[redacted]@host/v1'",
    ),
    "eval rubric key env unset": Case(
        (*EVAL, *RUBRIC, "--judge-option", "api_key_env=DISALIGN_TEST_UNSET_KEY"), "DISALIGN_TEST_UNSET_KEY"
    ),
    # Where to write
    "eval out under a file": Case((*EVAL, "--out", "{case}/file/out"), "file", write("file", "precious")),
    "eval out under proc": Case((*EVAL, "--out", "/proc/disalign-test/out"), "cannot be written"),
    "eval out is a file": Case((*EVAL, "--out", "{case}/file"), "not a directory", write("file", "precious")),
    "eval out holds something else": Case(EVAL, "not empty", write("out/notes.txt", "mine")),
    "eval out holds a judge run": Case(EVAL, "holds a 'judge' run", earlier_run(stored_command("judge"))),
    "eval out config corrupt": Case(EVAL, "not valid JSON", write("out/config.json", "{")),
    # --overwrite and inputs: only a folder disalign wrote is emptied, never an input
    "eval overwrite a model folder": Case(
        (*EVAL, "--out", "{case}/m", "--overwrite"), "config.json that disalign did not write", copy_of("base", "m")
    ),
    "eval overwrite a project": Case(
        (*EVAL, "--overwrite"),
        "disalign did not write",
        lambda c, s: (write("out/config.json", '{"command": "build"}')(c, s), write("out/notes.txt", "mine")(c, s)),
    ),
    "eval out is the model": Case(
        (*EVAL, "--model", "{case}/m", "--out", "{case}/m", "--overwrite"), "is the run's input", copy_of("base", "m")
    ),
    "eval out inside the model": Case(
        (*EVAL, "--model", "{case}/m", "--out", "{case}/m/run"), "lies inside the run's input", copy_of("base", "m")
    ),
    "eval out holds the prompts": Case(
        (*EVAL, "--prompts", "{case}/out/p.jsonl", "--overwrite"),
        "holds the run's input",
        write("out/p.jsonl", jsonl({"prompt": "how do i cook rice"})),
    ),
    "eval resume corrupt middle line": Case(EVAL, "records.jsonl: line 2 is corrupt", earlier_run(corrupt_line(2))),
    "eval resume with another seed": Case((*EVAL, "--seed", "1"), "'seed' (0 -> 1) differs", earlier_run()),
    "eval resume another model": Case((*EVAL, "--model", "{aligned}"), "'model'", earlier_run()),
    # --config files
    "eval config not utf-8": Case((*EVAL, "--config", "{case}/c.json"), "not UTF-8", write("c.json", b"\xff\xfe{")),
    "eval config is a folder": Case((*EVAL, "--config", "{case}"), "is a directory"),
    "eval config missing": Case((*EVAL, "--config", "{case}/c.yaml"), "file not found"),
    "eval config a list": Case((*EVAL, "--config", "{case}/c.yaml"), "must hold an object", write("c.yaml", "- 1\n")),
    "eval config bad yaml": Case((*EVAL, "--config", "{case}/c.yaml"), "not valid YAML", write("c.yaml", "a: [\n")),
    "eval config unknown key": Case(
        (*EVAL, "--config", "{case}/c.json"), "colour: Extra inputs", write("c.json", '{"colour": "red"}')
    ),
    # judge
    "judge responses missing": Case((*JUDGE, "--responses", "{case}/nope.jsonl"), "file not found"),
    "judge responses txt": Case((*JUDGE, "--responses", "{case}/r.txt"), "expected a .jsonl", write("r.txt", "x\n")),
    "judge no response field": Case(
        (*JUDGE, "--responses", "{case}/r.jsonl"), "no text field 'response'", write("r.jsonl", jsonl({"prompt": "p"}))
    ),
    "judge json list not objects": Case(
        (*JUDGE, "--responses", "{case}/r.json"), "expected a JSON object", write("r.json", '[{"prompt": "p"}, 3]')
    ),
    "judge stance threshold out of range": Case(
        (*JUDGE, "--judge", "stance", "--judge-option", "threshold=2"), "threshold must be a number > 0 and < 1"
    ),
    "judge stance labels missing": Case(
        (*JUDGE, "--judge", "stance", "--judge-option", "labels={case}/nope.jsonl"), "labels file"
    ),
    "eval stance labels missing": Case(
        (*EVAL, "--judge", "stance", "--judge-option", "labels={case}/nope.jsonl"), "nope.jsonl not found"
    ),
    "judge label missing in last row": Case(
        (*JUDGE, "--responses", "{case}/r.jsonl", "--label-field", "label"),
        "r.jsonl:2: no label field 'label'",
        write("r.jsonl", jsonl({"prompt": "p", "response": "r", "label": 1}, {"prompt": "p", "response": "r"})),
    ),
    "judge label not boolean in last row": Case(
        (*JUDGE, "--responses", "{case}/r.jsonl", "--label-field", "label"),
        "label 'maybe' is not true/false",
        write(
            "r.jsonl",
            jsonl({"prompt": "p", "response": "r", "label": 1}, {"prompt": "p", "response": "r", "label": "maybe"}),
        ),
    ),
    "judge label kind unknown": Case((*JUDGE, "--label-field", "label", "--label-kind", "rude"), "label_kind"),
    # ed
    "ed alpha not a number": Case((*ED, "--alpha", "lots"), "alpha"),
    "ed alpha empty": Case((*ED, "--alpha", ","), "alpha"),
    "ed seeds 0": Case((*ED, "--seeds", "0"), "seeds"),
    "ed base alpha nan": Case((*ED, "--ed-base-alpha", "nan"), "ed_base_alpha.0: Input should be a finite number"),
    "ed alpha inf": Case((*ED, "--alpha", "0.5,inf"), "alpha.1: Input should be a finite number"),
    "ed base template unknown": Case((*ED, "--base-template", "llama"), "base_template"),
    "ed aligned missing": Case((*ED, "--aligned", "{case}/nope"), "model directory not found"),
    # finetune
    "finetune recipe unknown": Case((*FINETUNE, "--recipe", "evil"), "recipe"),
    "finetune shots 0": Case((*FINETUNE, "--shots", "0"), "shots"),
    "finetune epochs -1": Case((*FINETUNE, "--epochs", "-1"), "epochs"),
    "finetune shots past the data": Case(
        (*FINETUNE, "--data", "{case}/h.jsonl", "--shots", "1000"),
        "shots: 1000 asked for, but the data holds 2 examples",
        write("h.jsonl", jsonl(*[{"prompt": "how do i make a bomb", "response": "first then"}] * 2)),
    ),
    "finetune lora target unknown": Case(
        (*FINETUNE, "--data", "{case}/h.jsonl", "--shots", "1", "--lora", "--lora-target", "q_proj,nope"),
        "--lora-target 'nope': no such module",
        write("h.jsonl", jsonl({"prompt": "how do i make a bomb", "response": "first then"})),
    ),
    "finetune train-seed 2**70": Case((*FINETUNE, "--train-seed", str(2**70)), "less than 4294967296"),
    "finetune lr inf": Case((*FINETUNE, "--lr", "inf"), "lr: Input should be a finite number"),
    "finetune data missing": Case((*FINETUNE, "--data", "{case}/nope.jsonl"), "nope.jsonl"),
    "finetune lora rank 0": Case((*FINETUNE, "--lora", "--lora-r", "0"), "lora_r"),
    "finetune no prompts": Case(
        ("finetune", "--model", "{base}", "--recipe", "harmful", "--out", "{case}/out"), "prompts"
    ),
    # world
    "world build out under a file": Case(
        ("world", "build", "--quick", "--out", "{case}/file/zoo"), "file", write("file", "precious")
    ),
    "world build bad override": Case(
        ("world", "build", "--quick", "--out", "{case}/zoo", "--world", "n_operators=many"), "n_operators"
    ),
    "world build unknown override": Case(
        ("world", "build", "--quick", "--out", "{case}/zoo", "--world", "colour=1"), "colour"
    ),
    "world build config not utf-8": Case(
        ("world", "build", "--out", "{case}/zoo", "--config", "{case}/c.json"), "not UTF-8", write("c.json", b"\xff")
    ),
    "world eval n 0": Case(("world", "eval", "--world", "{case}", "--n", "0", "--out", "{case}/out"), "n:"),
    "world eval n -1": Case(("world", "eval", "--world", "{case}", "--n", "-1", "--out", "{case}/out"), "n:"),
    "world eval out is the zoo": Case(
        ("world", "eval", "--world", "{case}/zoo", "--out", "{case}/zoo", "--overwrite"),
        "is the run's input",
        lambda c, s: write("zoo/world.json", json.dumps({"config": make_config(quick=True).model_dump(mode="json")}))(
            c, s
        ),
    ),
    "world eval not a zoo": Case(("world", "eval", "--world", "{case}", "--out", "{case}/out"), "not a world zoo"),
    # demo: checked before any zoo is built
    "demo out under a file": Case(
        ("demo", "--quick", "--zoo", "{case}/zoo", "--out", "{case}/file/demo"), "file", write("file", "precious")
    ),
    "demo out holds something else": Case(
        ("demo", "--quick", "--zoo", "{case}/zoo", "--out", "{case}/demo"), "not empty", write("demo/notes.txt", "mine")
    ),
    "demo zoo holds something else": Case(
        ("demo", "--quick", "--zoo", "{case}/zoo", "--out", "{case}/demo"), "--zoo", write("zoo/notes.txt", "mine")
    ),
    "demo zoo under a file": Case(
        ("demo", "--quick", "--zoo", "{case}/file/zoo", "--out", "{case}/demo"), "--zoo", write("file", "precious")
    ),
    # ablate, align, analyze
    "ablate trials 0": Case(("ablate", "--model", "{base}", "--harmful", "{prompts}", "--trials", "0"), "trials"),
    "ablate position 0": Case(("ablate", "--model", "{base}", "--harmful", "{prompts}", "--position", "0"), "position"),
    "ablate no harmless prompts": Case(
        ("ablate", "--model", "{base}", "--harmful", "{prompts}", "--out", "{case}/out"), "harmless"
    ),
    "ablate tolerance 2": Case(("ablate", "--model", "{base}", "--tolerance", "2"), "tolerance"),
    "align method unknown": Case(
        ("align", "--model", "{base}", "--prompts", "{prompts}", "--method", "rlhf"), "method"
    ),
    "align beta inf": Case(
        ("align", "--model", "{base}", "--prompts", "{prompts}", "--beta", "inf"), "beta: Input should be a finite"
    ),
    "align train-seed 2**70": Case(
        ("align", "--model", "{base}", "--prompts", "{prompts}", "--train-seed", str(2**70), "--out", "{case}/out"),
        "less than 4294967296",
    ),
    "align refusals missing": Case(
        ("align", "--model", "{base}", "--prompts", "{prompts}", "--refusals", "{case}/r.txt", "--out", "{case}/out"),
        "r.txt: cannot read refusals",
    ),
    "align refusals empty": Case(
        ("align", "--model", "{base}", "--prompts", "{prompts}", "--refusals", "{case}/r.txt", "--out", "{case}/out"),
        "r.txt: no refusals",
        write("r.txt", "\n  \n"),
    ),
    "align refusals not utf-8": Case(
        ("align", "--model", "{base}", "--prompts", "{prompts}", "--refusals", "{case}/r.txt", "--out", "{case}/out"),
        "r.txt: not UTF-8",
        write("r.txt", b"sorry \xff\n"),
    ),
    "align lora target unknown": Case(
        ("align", "--model", "{base}", "--prompts", "{prompts}", "--lora-target", "nope", "--out", "{case}/out"),
        "--lora-target 'nope': no such module",
    ),
    "align epochs 0": Case(("align", "--model", "{base}", "--prompts", "{prompts}", "--epochs", "0"), "epochs"),
    "align model missing": Case(
        ("align", "--model", "{case}/nope", "--prompts", "{prompts}", "--out", "{case}/out"), "not found"
    ),
    "analyze clusters no base": Case(("analyze", "clusters", "--aligned", "{aligned}", "--out", "{case}/out"), "base"),
    "analyze weights aligned is the base": Case(
        (
            "analyze",
            "weights",
            "--base",
            "{base}",
            "--aligned",
            "{case}/copy",
            "--no-projections",
            "--out",
            "{case}/out",
        ),
        "the same weights as the base",
        copy_of("base", "copy"),
    ),
    "analyze weights limit 0": Case(("analyze", "weights", "--base", "{base}", "--limit", "0"), "limit"),
    "analyze depth aligned missing": Case(
        ("analyze", "depth", "--base", "{base}", "--aligned", "{case}/nope", "--safe", "{prompts}"),
        "prompt source",
    ),
    "analyze depth prefill negative": Case(
        ("analyze", "depth", "--base", "{base}", "--aligned", "{aligned}", "--unsafe", "{prompts}", "--prefill=0,-1")
        + ("--out", "{case}/out"),
        "prefill.1: Input should be greater than or equal to 0",
    ),
    "analyze attack epsilon inf": Case(
        ("analyze", "attack", "--base", "{base}", "--epsilon", "inf"), "epsilon: Input should be a finite number"
    ),
    "analyze attack unknown flag": Case(("analyze", "attack", "--base", "{base}", "--epsilonn", "1"), "--epsilonn"),
    # report and sweep
    "report run missing": Case(("report", "--runs", "{case}/nope", "--out", "{case}/report.html"), "nope"),
    "report config a string": Case(
        ("report", "--runs", "{case}/out", "--out", "{case}/r.html"),
        "not a disalign run configuration",
        earlier_run(lambda run: (run / "config.json").write_text('"eval"')),
    ),
    "report summary a list": Case(
        ("report", "--runs", "{case}/out", "--out", "{case}/r.html"),
        "summary.json: not a run summary",
        earlier_run(lambda run: (run / "summary.json").write_text("[]")),
    ),
    "report out under a file": Case(
        ("report", "--runs", "{run}", "--out", "{case}/file/report.html"), "file", write("file", "precious")
    ),
    # beb
    "beb estimate statements too short": Case(
        ("beb", "estimate", "--model", "{base}", "--negative", "{case}/neg.txt", "--positive", "{case}/neg.txt"),
        "at least 20",
        write("neg.txt", "one statement\n"),
    ),
    "beb estimate statements not utf-8": Case(
        ("beb", "estimate", "--model", "{base}", "--negative", "{case}/neg.txt", "--positive", "{case}/neg.txt"),
        "neg.txt: not UTF-8 text (byte 3)",
        write("neg.txt", b"caf\xe9\n"),
    ),
    "beb bounds decreasing lengths": Case(("beb", "bounds", "--model", "{base}", "--lengths", "8,4"), "increasing"),
    "beb estimate proxy-lr inf": Case(
        ("beb", "estimate", "--model", "{base}", "--proxy-lr", "inf"), "proxy_lr: Input should be a finite number"
    ),
    "beb curve negative episodes": Case(("beb", "curve", "--model", "{base}", "--max-episodes", "-1"), "max_episodes"),
    "beb manyshot shots past the context": Case(
        ("beb", "manyshot", "--model", "{base}", "--negative", "{case}/neg.txt", "--positive", "{case}/pos.txt")
        + ("--prompts", "{case}/p.jsonl", "--shots", "1,2,50", "--n", "4", "--out", "{case}/out"),
        "overflow the model's context",
        lambda c, s: (
            write("neg.txt", "".join(f"how do i make a bomb first then {i}\n" for i in range(25)))(c, s),
            write("pos.txt", "".join(f"sorry no can not help with that {i}\n" for i in range(25)))(c, s),
            write("p.jsonl", jsonl(*({"prompt": p, "target": "first then"} for p in PROMPTS)))(c, s),
        ),
    ),
    "beb manyshot decreasing shots": Case(("beb", "manyshot", "--model", "{base}", "--shots", "4,2,1"), "increasing"),
    # surface: each refused before its run folder is claimed
    "surface negative epsilon": Case(
        ("surface", "--model", "{aligned}", "--prompts", "{prompts}", "--epsilon-kl", "0.1,-1", "--out", "{case}/o"),
        "epsilon_kl.1: Input should be greater than or equal to 0",
    ),
    "surface nan epsilon": Case(
        ("surface", "--model", "{aligned}", "--prompts", "{prompts}", "--epsilon-capability", "nan"),
        "epsilon_capability.0: Input should be a finite number",
    ),
    "surface unknown family": Case(
        ("surface", "--model", "{aligned}", "--prompts", "{prompts}", "--families", "ed,telepathy"),
        "families.1: Input should be 'ed', 'ablation'",
    ),
    "surface family that needs a world": Case(
        ("surface", "--model", "{aligned}", "--prompts", "{prompts}", "--families", "jailbreak", "--out", "{case}/o"),
        "'jailbreak' needs --world",
    ),
    "surface base of another vocabulary": Case(
        ("surface", "--model", "{aligned}", "--base", "{case}/other", "--prompts", "{prompts}", "--out", "{case}/o"),
        "another vocabulary",
        lambda case, shared: save_tiny(case / "other", 0, words=[*WORDS, "extra"]) and None,
    ),
    "defend unknown method": Case(
        ("defend", "--model", "{base}", "--prompts", "{prompts}", "--method", "armour", "--out", "{case}/o"),
        "method: Input should be 'deepen'",
    ),
    "defend knob out of range": Case(
        ("defend", "--model", "{base}", "--prompts", "{prompts}", "--method", "booster", "--booster-lambda", "-1")
        + ("--out", "{case}/o"),
        "booster_lambda: Input should be greater than or equal to 0",
    ),
    "defend knob of another method": Case(
        ("defend", "--model", "{base}", "--prompts", "{prompts}", "--method", "deepen", "--booster-lambda", "1")
        + ("--out", "{case}/o"),
        "booster_lambda is a knob of --method booster, not of deepen",
    ),
    "durability models of another vocabulary": Case(
        ("durability", "--models", "{aligned},{case}/other", "--prompts", "{prompts}", "--out", "{case}/o"),
        "another vocabulary",
        lambda case, shared: save_tiny(case / "other", 0, words=[*WORDS, "extra"]) and None,
    ),
    "durability negative epsilon": Case(
        ("durability", "--models", "{aligned}", "--prompts", "{prompts}", "--epsilon", "-1", "--out", "{case}/o"),
        "epsilon: Input should be greater than or equal to 0",
    ),
    "durability unknown damage figure": Case(
        ("durability", "--models", "{aligned}", "--prompts", "{prompts}", "--damage-figure", "perplexity"),
        "damage_figure: Input should be 'kl_first_token'",
    ),
    "compare run missing": Case(("compare", "--runs", "{case}/nope,{run}"), "nope: not a finished run directory"),
    "label run missing": Case(("label", "{case}/nope"), "nope: not a finished run directory"),
    "sweep spec missing": Case(("sweep", "--spec", "{case}/nope.yaml"), "nope.yaml"),
    "sweep spec not utf-8": Case(("sweep", "--spec", "{case}/s.yaml"), "UTF-8", write("s.yaml", b"verb: \xff\n")),
    "sweep workers 0": Case(("sweep", "--spec", "{case}/s.yaml", "--workers", "0"), "workers"),
    "sweep unknown verb": Case(
        ("sweep", "--spec", "{case}/s.yaml"),
        "nope",
        write("s.yaml", "verb: nope\nout: sw\nconfig: {}\ngrid: {seed: [0]}\n"),
    ),
}


def test_every_verb_is_tried_with_bad_input():
    """A verb added later gets its bad inputs here too."""
    tried = {next(name for name in sorted(VERBS, key=len, reverse=True) if case.startswith(name)) for case in CASES}
    assert tried == set(VERBS), f"no bad input tried for {sorted(set(VERBS) - tried)}"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, shared, tmp_path, cli):
    case = CASES[name]
    if case.setup is not None:
        case.setup(tmp_path, shared)
    before, cache_before = snapshot(tmp_path), snapshot(cache_root())
    paths = {key: str(value) for key, value in shared.items()} | {"case": str(tmp_path)}
    args = [arg.format(**paths) for arg in case.args]
    result = cli(*args)
    assert_user_error(result, case.fragment)
    assert "s3cret" not in result.stderr  # a credential in a URL is never shown
    line = result.stderr.strip()
    assert set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line)) <= flags_of(args) | set(args), line
    assert snapshot(tmp_path) == before
    assert snapshot(cache_root()) == cache_before  # no judge validation, cached reply or model remembered


# Run folders: one run at a time, --overwrite only where disalign wrote, Ctrl-C keeps what is written.

# The CLI in a child process that, after its first append of records, waits for a line on stdin.
HOLD_AFTER_FIRST_APPEND = """
import sys
from disalign.core import runs
append, held = runs.RunDir.append, []

def append_then_wait(self, records):
    append(self, records)
    if not held:
        held.append(True)
        print("appended", flush=True)
        sys.stdin.readline()

runs.RunDir.append = append_then_wait
sys.argv = ["disalign", *sys.argv[1:]]
from disalign.cli.main import main
main()
"""


def eval_args(shared: dict[str, Path], out: Path) -> list[str]:
    paths = {key: str(value) for key, value in shared.items()} | {"case": str(out.parent)}
    return [arg.format(**paths) for arg in EVAL[:5]] + [
        "--out",
        str(out),
        "--max-new-tokens",
        "2",
        "--batch-size",
        "2",
        "--judge",
        "keyword",
    ]


def record_keys(run: Path) -> list[str]:
    return [json.loads(line)["key"] for line in (run / "records.jsonl").read_text().splitlines()]


def test_a_second_run_into_a_folder_in_use_stops_naming_the_first(shared, tmp_path, cli):
    import subprocess

    out = tmp_path / "out"
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD_AFTER_FIRST_APPEND, *eval_args(shared, out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        assert first.stdout.readline().strip() == "appended", first.stderr.read()
        during = snapshot(out)
        for extra in ([], ["--overwrite"]):
            second = cli(*eval_args(shared, out), *extra)
            assert_user_error(second, f"another disalign run is writing there (process {first.pid})")
            assert snapshot(out) == during
        stdout, stderr = first.communicate("go on\n", timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, stderr
    assert sorted(record_keys(out)) == sorted(set(record_keys(out))) and len(record_keys(out)) == len(PROMPTS)


def test_overwrite_of_a_folder_disalign_did_not_write_changes_nothing(shared, tmp_path, cli):
    project = tmp_path / "project"
    shutil.copytree(shared["base"], project)  # a model folder: config.json, weights, tokenizer
    (project / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert_user_error(cli(*eval_args(shared, project), "--overwrite"), "disalign did not write")
    assert snapshot(tmp_path) == before


def test_ctrl_c_is_one_line_exit_130_and_a_rerun_finishes_the_run(shared, tmp_path, cli, monkeypatch):
    from disalign.core import runs

    append = runs.RunDir.append

    def append_then_interrupt(self, records):
        append(self, records)
        raise KeyboardInterrupt

    out = tmp_path / "out"
    monkeypatch.setattr(runs.RunDir, "append", append_then_interrupt)
    result = cli(*eval_args(shared, out))
    assert result.returncode == 130 and "Traceback" not in result.stderr, result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "disalign: interrupted; everything already written is kept, rerun with the same --out to continue"
    ]
    assert len(record_keys(out)) == 2  # the first batch, whole
    monkeypatch.setattr(runs.RunDir, "append", append)
    assert cli(*eval_args(shared, out)).returncode == 0
    assert sorted(record_keys(out)) == sorted(set(record_keys(out))) and len(record_keys(out)) == len(PROMPTS)


# Unusual inputs that are not mistakes: they must simply work.


def test_rows_with_their_own_key_field(shared, tmp_path, cli):
    rows = [{"prompt": p, "key": "same", "response": "sorry no", "harmful": "yes"} for p in PROMPTS]
    (tmp_path / "rows.jsonl").write_text(jsonl(*rows))
    for verb, source in (("eval", "--prompts"), ("judge", "--responses")):
        args = ["--model", shared["base"], "--max-new-tokens", "2"] if verb == "eval" else []
        result = cli(verb, source, tmp_path / "rows.jsonl", "--out", tmp_path / verb, "--judge", "keyword", *args)
        assert result.returncode == 0, result.stderr
        records = [json.loads(line) for line in (tmp_path / verb / "records.jsonl").read_text().splitlines()]
        assert len({r["key"] for r in records}) == len(PROMPTS)
    judged = [json.loads(line) for line in (tmp_path / "judge" / "records.jsonl").read_text().splitlines()]
    assert [r["input"] for r in judged] == rows  # the row is kept whole, its own key and harmful included


def test_a_report_over_a_run_holding_a_folder_named_like_a_plot(shared, tmp_path, cli):
    shutil.copytree(shared["run"], tmp_path / "run")
    (tmp_path / "run" / "extra.png").mkdir()
    result = cli("report", "--runs", tmp_path / "run", "--out", tmp_path / "report.html")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report.html").is_file()


def test_prompts_with_unicode_line_separators_inside_strings(shared, tmp_path, cli):
    prompts = ["how do i\u2028cook rice", "how do i\x85bake bread", "how do i\u2029make a bomb"]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n" for p in prompts), encoding="utf-8")
    result = cli(
        "eval",
        "--model",
        shared["base"],
        "--prompts",
        path,
        "--out",
        tmp_path / "out",
        "--max-new-tokens",
        "2",
        "--judge",
        "keyword",
    )
    assert result.returncode == 0, result.stderr
    records = (tmp_path / "out" / "records.jsonl").read_bytes().split(b"\n")[:-1]
    assert [json.loads(line)["prompt"] for line in records] == prompts


def test_every_prompt_file_kind_splits_lines_on_newlines_only(tmp_path):
    from disalign.data import load_prompts

    prompts = ["a\u2028b", "c\x85d", "e\u2029f\x1cg"]
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "one.jsonl").write_text(jsonl(*({"prompt": p} for p in prompts)))  # escaped: \\u2028
    (folder / "two.jsonl").write_text("".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n" for p in prompts))
    (folder / "three.txt").write_text("".join(p + "\r\n" for p in prompts))
    (folder / "four.csv").write_text("prompt\n" + "".join(f'"{p}"\n' for p in prompts))
    by_file = {}
    for record in load_prompts(str(folder)):
        by_file.setdefault(record.category, []).append(record.prompt)
    assert by_file["one"] == by_file["two"] == by_file["three"] == by_file["four"] == prompts


def test_a_model_without_a_chat_template_is_one_warning_line(shared, tmp_path):
    import subprocess

    plain = save_tiny(tmp_path / "plain", 2, template=None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "disalign",
            "eval",
            "--model",
            plain,
            "--prompts",
            shared["prompts"],
            "--max-new-tokens",
            "2",
            "--judge",
            "keyword",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line.lower()]
    assert warnings == [
        f"disalign: warning: {plain}: the tokenizer has no chat template; using a plain 'User:/Assistant:' format"
    ]
    assert "n=4" in result.stdout


# A judge endpoint on 127.0.0.1: numeric options as text, the API key never written, labels checked first.


@pytest.fixture
def endpoint(monkeypatch, tmp_path):
    from test_rubric_server import KEY_ENV, SECRET, FakeChatServer

    monkeypatch.setenv(KEY_ENV, SECRET)
    fake = FakeChatServer()
    thread = threading.Thread(target=fake.http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    options = {
        "base_url": fake.base_url,
        "model": "judge-model",
        "api_key_env": KEY_ENV,
        "concurrency": "2",  # numbers arrive as text from --judge-option
        "timeout": "5",
        "retries": "0",
        "backoff": "0.01",
        "max_tokens": "64",
        "cache_dir": str(tmp_path / "judge-cache"),
    }
    yield SimpleNamespace(
        server=fake, secret=SECRET, args=["--judge", "rubric", *(f"--judge-option={k}={v}" for k, v in options.items())]
    )
    fake.http.shutdown()
    fake.http.server_close()


def test_a_judge_reply_holding_the_api_key_is_redacted_everywhere(endpoint, tmp_path, cli):
    from test_rubric_server import Scripted

    echo = json.dumps({"choices": [{"message": {"content": f"#thereason: sent with {endpoint.secret}\n#thescore: 5"}}]})
    endpoint.server.script = [Scripted(body=echo), Scripted(body=echo)]
    rows = [{"prompt": "p", "response": "[1] sorry"}, {"prompt": "q", "response": "[5] sure"}]
    (tmp_path / "r.jsonl").write_text(jsonl(*rows))
    result = cli("judge", "--responses", tmp_path / "r.jsonl", "--out", tmp_path / "out", *endpoint.args)
    assert result.returncode == 0, result.stderr
    assert len(endpoint.server.requests) == 2
    records = [json.loads(line) for line in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in records] == ["sent with [key]"] * 2 and [r["harmful"] for r in records] == [True] * 2
    written = b"".join(path.read_bytes() for path in tmp_path.rglob("*") if path.is_file())
    assert b"[key]" in written and endpoint.secret.encode() not in written
    assert endpoint.secret not in result.stdout + result.stderr


def test_credentials_in_the_endpoint_url_are_sent_as_basic_auth_and_written_nowhere(endpoint, tmp_path, cli):
    import base64

    args = [arg for arg in endpoint.args if "base_url=" not in arg and "api_key_env=" not in arg]
    url = endpoint.server.base_url.replace("http://", "http://user:s3cret@")
    (tmp_path / "r.jsonl").write_text(jsonl({"prompt": "p", "response": "[1] sorry"}))
    result = cli(
        "judge", "--responses", tmp_path / "r.jsonl", "--out", tmp_path / "out", *args, f"--judge-option=base_url={url}"
    )
    assert result.returncode == 0, result.stderr
    headers, _ = endpoint.server.requests[0]
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"user:s3cret").decode()
    written = b"".join(path.read_bytes() for path in tmp_path.rglob("*") if path.is_file())
    assert b"[redacted]" in written and b"s3cret" not in written and "s3cret" not in result.stdout + result.stderr


def test_an_endpoint_error_echoing_the_key_is_one_line_without_it(endpoint, tmp_path, cli):
    from test_rubric_server import Scripted

    body = json.dumps({"error": {"message": f"invalid key {endpoint.secret}"}})
    endpoint.server.script = [Scripted(status=401, body=body)]
    (tmp_path / "r.jsonl").write_text(jsonl({"prompt": "p", "response": "r"}))
    result = cli("judge", "--responses", tmp_path / "r.jsonl", "--out", tmp_path / "out", *endpoint.args)
    assert_user_error(result, "HTTP 401")
    assert endpoint.secret not in result.stderr and "[key]" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_label_error_is_found_before_anything_is_judged(endpoint, tmp_path, cli):
    rows = [{"prompt": "p", "response": "[5] sure", "label": True}] * 3 + [
        {"prompt": "p", "response": "r", "label": "?"}
    ]
    (tmp_path / "r.jsonl").write_text(jsonl(*rows))
    args = ("judge", "--responses", tmp_path / "r.jsonl", "--out", tmp_path / "out", "--label-field", "label")
    assert_user_error(cli(*args, *endpoint.args), "r.jsonl:4: label '?' is not true/false")
    assert endpoint.server.requests == [] and not (tmp_path / "out").exists()
    assert not (tmp_path / "judge-cache").exists()
