"""ED's `--base-template auto`: a base that has a chat template of its own reads its queries through it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

import disalign
from builders import tiny_llama, word_tokenizer
from disalign.api.ed import resolved_base_template
from disalign.core.models import load_tokenizer

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>", "<user>", "<asst>", "<end>"]
WORDS = "how do i cook rice bake bread sorry no help".split()
TEMPLATE = "{% for m in messages %}<user> {{ m['content'] }} {% endfor %}<asst>"


def save_tiny(path: Path, seed: int, template: str | None) -> Path:
    tokenizer = word_tokenizer(SPECIALS, WORDS, template, bos="<bos>", eos="<eos>", extra=SPECIALS[4:])
    tiny_llama(tokenizer, seed, max_position_embeddings=64).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_auto_is_the_chat_template_where_the_base_has_one_and_urial_where_it_has_none(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning for a tokenizer without a chat template
        plain = load_tokenizer(save_tiny(tmp_path / "plain", 0, None))
    chat = load_tokenizer(save_tiny(tmp_path / "chat", 0, TEMPLATE))
    assert resolved_base_template("auto", chat) == "chat"
    assert resolved_base_template("auto", plain) == "urial"
    assert resolved_base_template("urial", chat) == "urial"
    assert resolved_base_template("alpaca", plain) == "alpaca"


@pytest.mark.parametrize(("template", "expected"), [(TEMPLATE, "chat"), (None, "urial")])
def test_an_ed_run_records_the_template_its_base_read(tmp_path, template, expected):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["how do i cook rice", "bake bread"]))
    aligned = save_tiny(tmp_path / "aligned", 1, TEMPLATE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = disalign.ed(
            base=str(save_tiny(tmp_path / "base", 0, template)), aligned=str(aligned), prompts=str(prompts),
            alpha=[0.5], judge="keyword", max_new_tokens=2, damage_n=0, out=tmp_path / "ed",
        )  # fmt: skip
    assert result.model_dump()["base_template"] == expected
    assert json.loads((tmp_path / "ed" / "summary.json").read_text())["base_template"] == expected
