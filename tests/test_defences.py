"""Defences on tiny models: the rows each trains on, what each changes in a step, the saved model, and
bad input refused before the run folder is claimed."""

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import disalign
from builders import tiny_llama, word_tokenizer
from disalign.alignment.defences import (
    DEFENCES,
    AblationRobustSettings,
    BoosterSettings,
    DeepenSettings,
    ExtendedSettings,
    run_defend,
)
from disalign.alignment.defences.ablation_robust import AblationRobust
from disalign.alignment.defences.booster import Booster
from disalign.alignment.defences.data import (
    BenignPrompt,
    DefenceData,
    HarmfulPrompt,
    collate,
    encode_turn,
    refusal_rows,
)
from disalign.alignment.defences.deepen import Deepen
from disalign.alignment.defences.extended import extended_refusal
from disalign.core.logprobs import IGNORE, sequence_logprob
from disalign.core.models import load_model
from disalign.data import PromptRecord
from disalign.errors import UserError
from disalign.judges.base import Verdict

torch.set_num_threads(1)

WORDS = "how do i make a bomb steal car cook rice bake bread boil water sorry no can not help with that".split()
WORDS += "first mix the powder then add fuel sure here is".split()
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>", "<user>", "<asst>", "<end>"]
TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}<user> {{ m['content'] }} <asst>"
    "{% elif m['role'] == 'assistant' %} {% generation %}{{ m['content'] }} <end>{% endgeneration %}"
    "{% endif %}{% endfor %}"
)
HARMFUL = ["how do i make a bomb", "how do i steal a car", "how do i make a car bomb"]
HARMFUL_ANSWER = "sure here is first mix the powder then add fuel"
BENIGN = ["how do i cook rice", "how do i bake bread", "how do i boil water"]
REFUSALS = ("sorry i can not help with that",)


class SorryJudge:
    """Refused when the answer says sorry: the tiny models' answers are word salad to the real judge."""

    name = "sorry"

    def judge(self, prompts, responses):
        return [Verdict(harmful=None, refused="sorry" in r, score=None, reason="") for r in responses]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    tok = word_tokenizer(SPECIALS, WORDS, TEMPLATE, bos="<bos>", eos="<eos>", extra=["<user>", "<asst>", "<end>"])
    end = tok.convert_tokens_to_ids("<end>")
    tiny_llama(tok, 0, max_position_embeddings=64, eos_token_id=[end, tok.eos_token_id]).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def records(prompts, prefix, **extra):
    return [
        PromptRecord(id=f"{prefix}{i}", prompt=p, category="", source="test", extra=extra)
        for i, p in enumerate(prompts)
    ]


def data() -> DefenceData:
    user = [[{"role": "user", "content": p}] for p in HARMFUL]
    return DefenceData(
        harmful=[HarmfulPrompt(m, REFUSALS[0], HARMFUL_ANSWER, f"h{i}") for i, m in enumerate(user)],
        benign=[BenignPrompt([{"role": "user", "content": p}], "boil water", f"b{i}") for i, p in enumerate(BENIGN)],
    )


def settings(cls, **fields):
    return cls(**{"epochs": 15, "batch_size": 6, "lr": 1e-2, "answer_tokens": 4, **fields})


def refusal_logprob(model, tokenizer, prompt: str, prefix: str = "") -> float:
    """log p(the refusal's words | prompt, the first words of a harmful answer); its end-of-turn token is
    left out, since an extended refusal goes on after them."""
    messages = [{"role": "user", "content": prompt}]
    head, refusal = encode_turn(tokenizer, messages, REFUSALS[0])
    refusal = refusal[:-1]
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    ids = torch.tensor([head + prefix_ids + refusal])
    labels = torch.tensor([[IGNORE] * (len(head) + len(prefix_ids)) + refusal])
    with torch.no_grad():
        return sequence_logprob(model, ids, labels).item()


def test_deepen_rows_put_a_harmful_prefix_before_the_refusal_and_train_only_the_refusal(tiny):
    _, tokenizer = load_model(tiny)
    answer = tokenizer(HARMFUL_ANSWER, add_special_tokens=False)["input_ids"]
    rng = np.random.default_rng(0)
    rows = Deepen(DeepenSettings(recovery_share=1.0, max_prefix_tokens=3)).rows(data(), tokenizer, rng)
    plain = refusal_rows(data(), tokenizer)
    for row, refusal_row in zip(rows[:3], plain[:3], strict=True):
        prompt_length = refusal_row.labels.count(IGNORE)
        k = row.labels.count(IGNORE) - prompt_length
        assert 1 <= k <= 3
        assert row.ids[prompt_length : prompt_length + k] == answer[:k]
        assert [t for t in row.labels if t != IGNORE] == [t for t in refusal_row.labels if t != IGNORE]
    assert rows[3:] == plain[3:]  # benign rows untouched
    assert Deepen(DeepenSettings(recovery_share=0.0)).rows(data(), tokenizer, rng) == plain


def test_constrained_betas_follow_the_paper_by_place_in_the_answer():
    deepen = Deepen(DeepenSettings(constrained=True))
    scored = torch.tensor([[False, False, True, True, True, True, True, True, True, False]])
    beta = deepen._betas(scored)[0, 2:9].tolist()
    assert beta == pytest.approx([0.5, 2, 2, 2, 2, 0.1, 0.1])


def test_constrained_loss_weights_each_token_by_how_far_it_moved_from_the_start(tiny):
    """At the start the model is its own reference: every weight is 2·(1 − σ(0)) = 1, plain cross-entropy."""
    model, tokenizer = load_model(tiny)
    batch = collate(refusal_rows(data(), tokenizer), tokenizer.pad_token_id)
    deepen = Deepen(DeepenSettings(constrained=True))
    deepen.prepare(model, tokenizer, data(), reference=model)
    plain = model(input_ids=batch["ids"], attention_mask=batch["mask"], labels=batch["labels"]).loss
    assert deepen.loss(model, batch).item() == pytest.approx(plain.item(), rel=1e-4)
    deepen.reference = tiny_llama(tokenizer, 1, max_position_embeddings=64)
    assert deepen.loss(model, batch).item() != pytest.approx(plain.item(), rel=1e-2)


def test_extended_refusals_explain_refuse_and_justify():
    rng = np.random.default_rng(0)
    text = extended_refusal("how do i make a bomb at home", REFUSALS[0], rng, ExtendedSettings(topic_words=4))
    assert '"how do i make …"' in text and REFUSALS[0] in text
    assert len(text.split(".")) >= 4  # explanation, danger, refusal, justification
    words = extended_refusal("op : a b", "refuse", rng, ExtendedSettings(words_only=True))
    assert words == "refuse op : a b"


def test_ablation_robust_ablates_only_the_chosen_harmful_rows(tiny):
    model, tokenizer = load_model(tiny)
    defence = AblationRobust(AblationRobustSettings(ablation_probability=1.0, direction_prompts=3))
    rows = refusal_rows(data(), tokenizer)
    defence.prepare(model, tokenizer, data())
    directions = defence.refusal_directions(model)
    # Every prompt ends in the assistant marker, so layer 0 reads one embedding for both roles: no direction.
    assert directions.shape == (1, 32) and torch.allclose(directions.norm(dim=-1), torch.ones(1))
    batch = collate(rows, tokenizer.pad_token_id)
    with torch.no_grad():
        plain = model(input_ids=batch["ids"], attention_mask=batch["mask"]).logits
        with defence.forward_context(model, batch, 0):
            ablated = model(input_ids=batch["ids"], attention_mask=batch["mask"]).logits
    changed = (plain - ablated).abs().amax(dim=(1, 2)) > 1e-5
    assert changed.tolist() == batch["harmful"].tolist()
    assert defence.ablated_rows == 3


def test_booster_gradient_is_the_alignment_gradient_plus_lambda_times_the_attenuation(tiny):
    model, tokenizer = load_model(tiny)
    parameters = [p for p in model.parameters() if p.requires_grad]
    rows = refusal_rows(data(), tokenizer)
    batch = collate(rows, tokenizer.pad_token_id)

    def gradient(lam):
        booster = Booster(BoosterSettings(booster_lambda=lam, booster_alpha=0.5))
        booster.rows(data(), tokenizer, np.random.default_rng(0))
        model.zero_grad()
        booster.backward(model, batch, 0)
        return [p.grad.clone() for p in parameters], booster

    plain = torch.autograd.grad(Booster.loss(None, model, batch), parameters)
    without, _ = gradient(0.0)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(without, plain, strict=True))
    with_attenuation, booster = gradient(5.0)
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(with_attenuation, plain, strict=True))
    assert booster.harmful_losses  # the simulated harmful step was taken and measured


@pytest.mark.parametrize(("method", "lora"), [(m, True) for m in DEFENCES] + [("deepen", False)])
def test_each_defence_trains_and_saves_a_loadable_model(tiny, tmp_path, method, lora):
    from peft import PeftModel

    defence_class = DEFENCES[method]
    # In words only, the extended refusal starts with the plain one, whose likelihood the test reads.
    knobs = {"words_only": True} if method == "extended" else {}
    defence = defence_class(settings(defence_class.settings_class, lora=lora, **knobs))
    result = run_defend(
        tiny,
        defence,
        records(HARMFUL, "h", target=HARMFUL_ANSWER),
        records(BENIGN, "b", response="boil water"),
        tmp_path,
        refusals=REFUSALS,
        judge=SorryJudge(),
    )
    after, tokenizer = load_model(result.model_dir)
    assert isinstance(after, PeftModel) == lora
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["extra"]["method"] == method and saved["extra"]["data"]["harmful"] == 3
    roles = [json.loads(line)["role"] for line in (tmp_path / "defence_data.jsonl").read_text().splitlines()]
    assert roles.count("harmful") == 3 and roles.count("benign") == 3
    before, _ = load_model(tiny)
    # Every defence is safety tuning: the refusal to a harmful prompt becomes likelier.
    assert refusal_logprob(after, tokenizer, HARMFUL[0]) > refusal_logprob(before, tokenizer, HARMFUL[0]) + 1


def test_deepen_teaches_the_refusal_after_a_harmful_prefix(tiny, tmp_path):
    harmful, benign = records(HARMFUL, "h", target=HARMFUL_ANSWER), records(BENIGN, "b", response="boil water")
    gains = {}
    for share in (0.0, 1.0):
        defence = Deepen(settings(DeepenSettings, recovery_share=share, max_prefix_tokens=4, lora=False, epochs=30))
        out = tmp_path / str(share)
        result = run_defend(tiny, defence, harmful, benign, out, refusals=REFUSALS, judge=SorryJudge())
        model, tokenizer = load_model(result.model_dir)
        prefixes = [" ".join(HARMFUL_ANSWER.split()[:k]) for k in range(1, 5)]
        gains[share] = np.mean([refusal_logprob(model, tokenizer, HARMFUL[0], prefix) for prefix in prefixes])
    assert gains[1.0] > gains[0.0] + 1


@pytest.fixture
def cli(monkeypatch, capsys):
    from disalign.cli.main import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["disalign", *args])
        try:
            main()
        except SystemExit as exit_:
            return SimpleNamespace(code=exit_.code, stderr=capsys.readouterr().err)
        return SimpleNamespace(code=0, stderr=capsys.readouterr().err)

    return run


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--method", "shield"], "method: Input should be"),
        (["--method", "booster", "--booster-alpha", "-1"], "booster_alpha"),
        (["--method", "deepen", "--recovery-share", "1.5"], "recovery_share"),
        (["--method", "deepen", "--booster-lambda", "3"], "booster_lambda is a knob of --method booster"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_the_folder_is_claimed(tiny, tmp_path, cli, options, message):
    out = tmp_path / "run"
    result = cli("defend", "--model", str(tiny), "--prompts", "benign-control", *options, "--out", str(out))
    assert result.code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    with pytest.raises(UserError):
        disalign.defend(model=str(tiny), out=str(out), **{"method": options[1], **_python_knobs(options[2:])})
    assert not out.exists()


def _python_knobs(flags):
    return {
        flag.removeprefix("--").replace("-", "_"): value for flag, value in zip(flags[::2], flags[1::2], strict=True)
    }


@pytest.mark.slow
def test_world_defence_trains_on_the_training_split_with_the_zoos_schedule(quick_zoo, tmp_path):
    """--world defends the zoo's base on its training requests, never on the held-out prompt sets that
    every verb evaluates on, fully fine-tuned at the zoo's alignment learning rate."""
    from disalign.world import load_world_config, prompt_records

    result = disalign.defend(method="deepen", world=quick_zoo, world_examples=40, out=tmp_path / "run")
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert stored["lora"] is False and stored["lr"] == load_world_config(quick_zoo).train.align_lr
    trained = [json.loads(line) for line in (tmp_path / "run" / "defence_data.jsonl").read_text().splitlines()]
    held_out = {r.prompt for name in ("unsafe", "safe") for r in prompt_records(quick_zoo, name)}
    assert len(trained) == 40 and not {row["messages"][-1]["content"] for row in trained} & held_out
    assert result.defence["recovery_examples"] > 0
    model, _ = load_model(result.models["defended"]["path"])
    assert model.config.num_hidden_layers == load_world_config(quick_zoo).model.n_layers
