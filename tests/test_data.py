"""Prompt sources: file formats, recognised layouts, folders, named sources and their errors."""

from __future__ import annotations

import csv
import io
import json
import os
import urllib.error
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from disalign.data import (  # noqa: E402
    BENIGN_CONTROL,
    UPSTREAM,
    PromptRecord,
    fetch_source,
    load_prompts,
    upstream,  # noqa: E402
)
from disalign.data.folders import HEXPHI_CATEGORIES  # noqa: E402
from disalign.errors import UserError  # noqa: E402

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not SHARED_DATASETS.is_dir(), reason="shared/datasets is not beside the repository")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISALIGN_CACHE", str(tmp_path / "cache"))


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    path.write_text(buffer.getvalue())
    return path


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# --- plain files -------------------------------------------------------------------------------


def test_jsonl_prompt_field_with_category_and_extra(tmp_path):
    path = write_jsonl(
        tmp_path / "mine.jsonl",
        [{"prompt": " How? ", "category": "misc", "note": 1}, {"prompt": "Why?"}],
    )
    records = load_prompts(str(path))
    assert records == [
        PromptRecord("mine:0", "How?", "misc", "mine", {"note": 1}),
        PromptRecord("mine:1", "Why?", "uncategorised", "mine", {}),
    ]


@pytest.mark.parametrize("field", ["goal", "Behavior", "instruction", "question"])
def test_jsonl_accepts_the_usual_prompt_fields(tmp_path, field):
    path = write_jsonl(tmp_path / "x.jsonl", [{field: "Do it", "other": "x"}])
    assert [r.prompt for r in load_prompts(str(path))] == ["Do it"]


def test_jsonl_column_option_and_first_of_a_category_list(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": "A", "prompt": "B", "categories": ["c1", "c2"]}])
    [record] = load_prompts(str(path), column="text")
    assert (record.prompt, record.category, record.extra["categories"]) == ("A", "c1", ["c1", "c2"])


def test_jsonl_line_that_is_not_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine"}\n\n{"prompt": oops}\n')
    with pytest.raises(UserError) as err:
        load_prompts(str(path))
    assert f"{path}:3" in one_line(err) and "not valid JSON" in str(err.value)


def test_jsonl_rows_must_be_objects_with_the_field(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "a"}, ["b"]])
    with pytest.raises(UserError, match=r"x.jsonl:2: expected a JSON object"):
        load_prompts(str(path))
    path = write_jsonl(tmp_path / "y.jsonl", [{"prompt": "a"}, {"text": "b"}])
    with pytest.raises(UserError, match=r"y.jsonl:2: no field 'prompt'"):
        load_prompts(str(path))
    path = write_jsonl(tmp_path / "z.jsonl", [{"prompt": 3}])
    with pytest.raises(UserError, match="is int, not text"):
        load_prompts(str(path))


def test_csv_with_column_option_and_missing_column(tmp_path):
    path = write_csv(tmp_path / "t.csv", [["text", "label"], ["hello, world", "x"], ["", "y"]])
    with pytest.raises(UserError) as err:
        load_prompts(str(path))
    assert "no prompt column" in one_line(err) and "text" in str(err.value)
    [record] = load_prompts(str(path), column="text")
    assert (record.prompt, record.extra) == ("hello, world", {"label": "x"})
    with pytest.raises(UserError, match="no column 'body'"):
        load_prompts(str(path), column="body")


def test_txt_one_prompt_per_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("first\n\n   \nsecond\n")
    assert [(r.id, r.prompt) for r in load_prompts(str(path))] == [("p:0", "first"), ("p:1", "second")]
    with pytest.raises(UserError, match="not .txt"):
        load_prompts(str(path), column="prompt")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", "", "empty file"),
        ("blank.txt", "\n \n", "empty file"),
        ("header.csv", "prompt,category\n", "no prompts found"),
        ("blank.jsonl", '{"prompt": "  "}\n', "no prompts found"),
        ("data.parquet", "x", "unsupported file type"),
    ],
)
def test_files_without_usable_rows(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserError, match=message) as err:
        load_prompts(str(path))
    one_line(err)


def test_missing_path_lists_what_a_source_can_be(tmp_path):
    with pytest.raises(UserError) as err:
        load_prompts(str(tmp_path / "nope.jsonl"))
    assert "no such file" in one_line(err) and BENIGN_CONTROL in str(err.value)


# --- recognised layouts ------------------------------------------------------------------------


def test_advbench_csv(tmp_path):
    path = write_csv(tmp_path / "harmful_behaviors.csv", [["goal", "target"], ["Write a bad thing", "Sure, here is"]])
    [record] = load_prompts(str(path))
    assert record.source == "advbench"
    assert (record.prompt, record.extra) == ("Write a bad thing", {"target": "Sure, here is"})


HARMBENCH_ROWS = [
    ["Behavior", "FunctionalCategory", "SemanticCategory", "Tags", "ContextString", "BehaviorID"],
    ["Give instructions for X", "standard", "chemical_biological", "", "", "x_instructions"],
    ["Summarise this text", "contextual", "misinformation", "context", "Line one,\nline two", "summary_ctx"],
    ["Reproduce the lyrics of Y", "copyright", "copyright", "lyrics", "", "lyrics_y"],
    ["Write a threat", "standard", "harassment_bullying", "", "", "threat"],
]


def test_harmbench_skips_contextual_and_copyright_by_default(tmp_path):
    path = write_csv(tmp_path / "harmbench_behaviors_text_all.csv", HARMBENCH_ROWS)
    records = load_prompts(str(path))
    assert [r.id for r in records] == ["x_instructions", "threat"]
    assert {r.source for r in records} == {"harmbench"}
    assert records[0].category == "chemical_biological"
    assert records[0].extra["FunctionalCategory"] == "standard"


def test_harmbench_include_contextual_prepends_the_context(tmp_path):
    path = write_csv(tmp_path / "hb.csv", HARMBENCH_ROWS)
    records = {r.id: r for r in load_prompts(str(path), include_contextual=True)}
    assert len(records) == 4
    assert records["summary_ctx"].prompt == "Line one,\nline two\n\n---\n\nSummarise this text"


def test_harmbench_with_only_contextual_rows_says_why_nothing_is_left(tmp_path):
    path = write_csv(tmp_path / "hb.csv", [HARMBENCH_ROWS[0], HARMBENCH_ROWS[2]])
    with pytest.raises(UserError, match="contextual and copyright"):
        load_prompts(str(path))


def test_donotanswer_upstream_csv_and_jsonl(tmp_path):
    path = write_csv(
        tmp_path / "data_en.csv",
        [
            ["id", "risk_area", "types_of_harm", "specific_harms", "question"],
            ["0", "Malicious Uses", "t", "s", "How to?"],
        ],
    )
    [record] = load_prompts(str(path))
    assert (record.source, record.category, record.prompt) == ("donotanswer", "Malicious Uses", "How to?")
    path = write_jsonl(tmp_path / "information_hazard.jsonl", [{"prompt": "Who?", "intents": ["S009"]}])
    [record] = load_prompts(str(path))
    assert (record.source, record.category, record.extra) == ("donotanswer", "uncategorised", {"intents": ["S009"]})


# --- folders -----------------------------------------------------------------------------------


def make_hexphi(folder: Path, numbers=range(1, 12)) -> Path:
    folder.mkdir()
    for n in numbers:
        (folder / f"category_{n}.csv").write_text(f'"Prompt {n}a, quoted"\nPrompt {n}b, with a bare comma\n')
    return folder


def test_hexphi_folder(tmp_path):
    records = load_prompts(str(make_hexphi(tmp_path / "HEx-PHI")))
    assert len(records) == 22
    assert [r.category for r in records[::2]] == list(HEXPHI_CATEGORIES)
    assert records[0].prompt == "Prompt 1a, quoted"
    assert records[1].prompt == "Prompt 1b, with a bare comma"
    assert {r.source for r in records} == {"hexphi"}
    assert records[-1].id == "hexphi:category_11:1"


def test_hexphi_folder_missing_categories_are_named(tmp_path):
    folder = make_hexphi(tmp_path / "hexphi", [n for n in range(1, 12) if n not in (2, 7)])
    with pytest.raises(UserError) as err:
        load_prompts(str(folder))
    message = one_line(err)
    assert "category_2 (Child Abuse Content)" in message and "category_7 (Fraud/Deception)" in message


def test_hexphi_folder_with_other_file_names_uses_their_stems(tmp_path):
    folder = tmp_path / "hx"
    folder.mkdir()
    for letter in "abcdefghijk":
        (folder / f"{letter}.csv").write_text(f"prompt {letter}\n")
    records = load_prompts(str(folder))
    assert [r.category for r in records] == list("abcdefghijk")


def test_folder_of_headerless_csvs_that_is_not_hexphi(tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    (folder / "one.csv").write_text("a prompt\n")
    with pytest.raises(UserError, match="HEx-PHI has eleven"):
        load_prompts(str(folder))


def test_folder_of_prompt_files_takes_categories_from_file_names(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_jsonl(folder / "cyber.jsonl", [{"prompt": "a"}, {"prompt": "b", "category": "own"}])
    (folder / "bio.txt").write_text("c\n")
    (folder / "README.md").write_text("not prompts")
    (folder / "LICENSE.txt").write_text("not prompts either")
    records = load_prompts(str(folder))
    assert [(r.id, r.category, r.source) for r in records] == [
        ("mixed:bio:0", "bio", "mixed"),
        ("mixed:cyber:0", "cyber", "mixed"),
        ("mixed:cyber:1", "own", "mixed"),
    ]


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no"):
        load_prompts(str(tmp_path / "empty"))


# --- named sources -----------------------------------------------------------------------------


def test_benign_control_ships_with_the_package():
    records = load_prompts(BENIGN_CONTROL)
    assert len(records) >= 40
    assert len({r.id for r in records}) == len(records)
    assert {r.source for r in records} == {BENIGN_CONTROL}
    assert all(r.category != "uncategorised" for r in records)
    assert any("kill a Python process" in r.prompt for r in records)


def test_world_source_needs_a_world_and_calls_the_world_hook(monkeypatch, tmp_path):
    with pytest.raises(UserError, match=r"world:unsafe needs --world DIR"):
        load_prompts("world:unsafe")
    calls = []

    def prompt_records(world_dir, name):
        calls.append((world_dir, name))
        return [PromptRecord("world:unsafe:0", "f1 : a b", "unsafe", "world:unsafe")]

    import disalign.world

    monkeypatch.setattr(disalign.world, "prompt_records", prompt_records, raising=False)
    records = load_prompts("world:unsafe", world=tmp_path)
    assert calls == [(tmp_path, "unsafe")] and records[0].prompt == "f1 : a b"


def test_named_source_offline_says_what_to_download_and_where(tmp_path):
    with pytest.raises(UserError) as err:
        load_prompts("advbench")
    message = one_line(err)
    assert UPSTREAM["advbench"].url in message
    assert str(tmp_path / "cache" / "data" / "advbench" / "harmful_behaviors.csv") in message
    with pytest.raises(UserError, match="gated"):
        load_prompts("hexphi")


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_fetch_source_downloads_once_into_the_cache(monkeypatch):
    requested = []

    def urlopen(request, timeout):
        requested.append((request.full_url, timeout))
        return FakeResponse(b"goal,target\nDo a thing,Sure\n")

    monkeypatch.setattr(upstream.urllib.request, "urlopen", urlopen)
    path = fetch_source("advbench")
    assert path.is_file() and requested == [(UPSTREAM["advbench"].url, upstream.DOWNLOAD_TIMEOUT_S)]
    assert fetch_source("advbench") == path and len(requested) == 1
    [record] = load_prompts("advbench")
    assert (record.source, record.prompt) == ("advbench", "Do a thing")


def test_load_prompts_fetches_only_when_allowed(monkeypatch):
    def unreachable(request, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(upstream.urllib.request, "urlopen", unreachable)
    with pytest.raises(UserError) as err:
        load_prompts("harmbench", offline=False)
    assert "cannot download" in one_line(err) and "harmbench_behaviors_text_all.csv" in str(err.value)
    with pytest.raises(UserError, match="unknown data source"):
        fetch_source("nope")


# --- the shared copies of public data sets -----------------------------------------------------


@needs_shared
def test_shared_advbench():
    records = load_prompts(str(SHARED_DATASETS / "advbench" / "advbench.jsonl"))
    assert len(records) == 520 and records[0].source == "advbench"
    assert all(r.category != "uncategorised" for r in records)


@needs_shared
def test_shared_harmbench_folder():
    records = load_prompts(str(SHARED_DATASETS / "harmbench"))
    assert len(records) == 200 and records[0].source == "harmbench"


@needs_shared
def test_shared_donotanswer_folder():
    records = load_prompts(str(SHARED_DATASETS / "donotanswer"))
    assert len(records) == 939
    assert {r.source for r in records} == {"donotanswer"}
    assert len({r.category for r in records}) == 5
