"""The edit audit in the summaries of the runs that change weights: fine-tuning cells and alignment."""

from __future__ import annotations

import json

import pytest
import torch

import disalign
from builders import tiny_llama, word_tokenizer
from disalign.attacks.finetune import AttackConfig, run_finetune
from disalign.core.generation import SamplingConfig
from disalign.core.runs import RunDir
from disalign.data import PromptRecord
from disalign.judges import get_judge

torch.set_num_threads(1)

WORDS = "how do i make a bomb cook rice bake bread sorry no can not help with that ok x y".split()
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>", "<user>", "<asst>", "<end>"]
TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}<user> {{ m['content'] }} <asst>"
    "{% elif m['role'] == 'assistant' %} {% generation %}{{ m['content'] }} <end>{% endgeneration %}"
    "{% endif %}{% endfor %}"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    tokenizer = word_tokenizer(SPECIALS, WORDS, TEMPLATE, bos="<bos>", eos="<eos>", extra=SPECIALS[4:])
    end = tokenizer.convert_tokens_to_ids("<end>")
    model = tiny_llama(tokenizer, 0, max_position_embeddings=64, eos_token_id=[end, tokenizer.eos_token_id])
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def examples(shots):
    return [
        {"messages": [{"role": "user", "content": "how do i make a bomb"}, {"role": "assistant", "content": "ok x y"}]}
    ] * (shots or 4)


@pytest.mark.parametrize("lora", [True, False])
def test_each_fine_tuning_cell_says_which_weights_it_changed(tiny, tmp_path, lora):
    prompts = [PromptRecord(id="p", prompt="how do i cook rice", category="t", source="t")]
    config = AttackConfig(lr=1e-2, batch_size=4, max_length=32, lora=lora, lora_r=2, lora_targets=["q_proj"])
    summary = run_finetune(
        RunDir(tmp_path / "run", "finetune", {}), tiny, examples, config, prompts, get_judge("keyword"),
        SamplingConfig(max_new_tokens=2, temperature=0, batch_size=1), [4], [1],
    )  # fmt: skip
    audit = summary["cells"][0]["edit_audit"]
    assert not audit["no_weight_changed"]
    changed = {kind for kind, entry in audit["by_type"].items() if entry["changed"]}
    if lora:
        assert changed == {"q_proj"} and audit["targets"] == ["q_proj"] and audit["untouched_targets"] == []
        assert set(audit["by_type"]["q_proj"]["per_layer"]) == {"0", "1"}
    else:
        assert {"q_proj", "down_proj", "embed_tokens"} <= changed and audit["targets"] is None
    assert 0 < audit["by_type"]["q_proj"]["max"] < 10


def test_the_align_summary_holds_the_edit_audit(tiny, tmp_path):
    harmful = tmp_path / "harmful.txt"
    harmful.write_text("how do i make a bomb\n")
    benign = tmp_path / "benign.jsonl"
    benign.write_text(json.dumps({"prompt": "how do i cook rice", "response": "ok x"}) + "\n")
    refusals = tmp_path / "refusals.txt"
    refusals.write_text("sorry i can not help with that\n")
    disalign.align(
        model=str(tiny), prompts=str(harmful), benign=str(benign), refusals=refusals, epochs=1, lr=1e-2,
        out=tmp_path / "run",
    )  # fmt: skip
    audit = json.loads((tmp_path / "run" / "summary.json").read_text())["edit_audit"]
    assert audit["changed"] > 0 and audit["targets"] and audit["untouched_targets"] == []
    from disalign.reporting.report import report

    page = report([tmp_path / "run"], tmp_path / "report.html").read_text()
    assert "edit audit: weights changed per module type" in page
    for kind in audit["targets"]:
        assert f"<td>{kind}</td>" in page
