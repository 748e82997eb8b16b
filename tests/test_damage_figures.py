"""The damage figures beside the KLs: quick-set capability, degenerate answers, system-prompt refusals."""

from __future__ import annotations

import copy

import pytest
import torch

from builders import tiny_llama, word_tokenizer
from disalign.core import damage as damage_module
from disalign.core.damage import (
    DamageMeter,
    candidate_logprobs,
    capability_accuracy,
    capability_rows,
    forbidden_topic_prompts,
    refuses_topic,
)
from disalign.core.generation import SamplingConfig
from disalign.core.logprobs import IGNORE, sequence_logprob
from disalign.data import PromptRecord
from disalign.data.capability import CapabilityItem
from test_damage import PROMPTS, SPECIALS, TEMPLATE, WORDS, ScriptedTaskJudge, harmless, model_pair

SYSTEM_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }} "
    "{% else %}user: {{ m['content'] }} {% endif %}{% endfor %}assistant:"
)


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(SPECIALS, WORDS, TEMPLATE, bos="<s>", eos="</s>", extra=["<end>"])


def items(*answers_and_sizes) -> list[CapabilityItem]:
    return [
        CapabilityItem(str(i), "t", "q", tuple(f"c{j}" for j in range(size)), answer)
        for i, (answer, size) in enumerate(answers_and_sizes)
    ]


def test_an_item_is_right_when_its_answer_alone_scores_highest():
    quick = items((0, 2), (1, 3), (2, 3), (0, 2))
    scores = [-1.0, -2.0] + [-3.0, -1.0, -2.0] + [-1.0, -2.0, -1.5] + [-1.0, -1.0]  # the last is a tie
    assert capability_accuracy(quick, scores) == 0.5
    lengths = [CapabilityItem("x", "t", "q", ("a", "bbbb"), 1)]
    assert capability_accuracy(lengths, [-1.0, -2.0]) == 0.0
    assert capability_accuracy(lengths, [-1.0, -2.0], per_character=True) == 1.0  # −0.5 per character beats −1


def test_candidates_are_scored_as_one_unpadded_sequence_each(tokenizer):
    model = model_pair(tokenizer)[0]
    quick = [
        CapabilityItem("a", "t", "tell me a poem", ("the sea", "cake"), 0),
        CapabilityItem("b", "t", "plan", ("trip city about", "poem"), 1),
    ]
    rows = capability_rows(tokenizer, quick)
    assert len(rows) == 4 and all(candidate for _, candidate in rows)
    batched = candidate_logprobs(model, rows, tokenizer.pad_token_id, batch_size=3)
    for (prompt, candidate), score in zip(rows, batched, strict=True):
        ids = torch.tensor([prompt + candidate])
        labels = torch.tensor([[IGNORE] * len(prompt) + candidate])
        with torch.no_grad():
            assert score == pytest.approx(float(sequence_logprob(model, ids, labels)), abs=1e-4)


def test_a_text_model_gets_every_figure_and_an_unchanged_one_loses_nothing(tokenizer):
    original, attacked = model_pair(tokenizer)
    meter = DamageMeter(tokenizer, harmless())
    same = meter(original, copy.deepcopy(original))
    assert same["capability_drop"] == 0 and 0 <= same["capability_accuracy"] <= 1
    assert same["system_prompt_refusal_retention"] is None  # this chat template drops a system message
    changed = meter(original, attacked)
    assert changed["capability_drop"] == pytest.approx(same["capability_accuracy"] - changed["capability_accuracy"])
    assert 0 <= changed["degenerate_rate"] <= 1


def test_degenerate_answers_are_counted(tokenizer, monkeypatch):
    original, attacked = model_pair(tokenizer)
    answers = {id(attacked): ["the sea the sea the sea the sea the sea the sea the sea the sea"] * 3 + ["a poem"]}
    meter = DamageMeter(tokenizer, harmless())
    real = meter._greedy

    def greedy(model, prompts, tokens):
        return answers.get(id(model)) or real(model, prompts, tokens)

    monkeypatch.setattr(meter, "_greedy", greedy)
    assert meter(original, attacked)["degenerate_rate"] == 0.75


def test_in_the_world_the_capability_is_the_safe_accuracy(tokenizer):
    original, attacked = model_pair(tokenizer)
    task = ScriptedTaskJudge([[True, True, True, False], [True, False, False, False]])
    meter = DamageMeter(tokenizer, harmless(), task_judge=task, sampling=SamplingConfig(max_new_tokens=4))
    figures = meter(original, attacked)
    assert figures["capability_accuracy"] == 0.25
    assert figures["capability_drop"] == pytest.approx(-figures["safe_accuracy_delta"]) == pytest.approx(0.5)
    assert figures["system_prompt_refusal_retention"] is None and meter.capability_items == []


def test_system_prompt_refusals_are_kept_or_lost(monkeypatch):
    tokenizer = word_tokenizer(SPECIALS, WORDS, SYSTEM_TEMPLATE, bos="<s>", eos="</s>", extra=["<end>"])
    assert forbidden_topic_prompts(tokenizer) is not None
    original, attacked = model_pair(tokenizer)
    n = len(damage_module.FORBIDDEN_TOPIC_REQUESTS)
    refusals = {
        id(original): [True] * 4 + [False] * (n - 4),
        id(attacked): [True, False, False, False, True] + [False] * (n - 5),
    }
    meter = DamageMeter(tokenizer, harmless())
    monkeypatch.setattr(meter, "_topic_refusals", lambda model: refusals[id(model)])
    figures = meter(original, attacked)
    assert figures["system_prompt_refusal_retention"] == 0.25  # one of the original's four refusals survives
    assert figures["system_prompt_refusal_rate"] == pytest.approx(2 / n)
    refusals[id(original)] = [False] * n
    again = DamageMeter(tokenizer, harmless())
    monkeypatch.setattr(again, "_topic_refusals", lambda model: refusals[id(model)])
    assert again(original, attacked)["system_prompt_refusal_retention"] is None  # nothing to retain


def test_an_emulated_model_answers_through_its_responder_and_has_no_system_prompt_figures(monkeypatch):
    tokenizer = word_tokenizer(SPECIALS, WORDS, SYSTEM_TEMPLATE, bos="<s>", eos="</s>", extra=["<end>"])
    original, attacked = model_pair(tokenizer)
    meter = DamageMeter(tokenizer, harmless())
    monkeypatch.setattr(meter, "_topic_refusals", lambda model: [True] * len(damage_module.FORBIDDEN_TOPIC_REQUESTS))
    figures = meter(original, attacked, lambda model, prompts: ["write write write write write write"] * len(prompts))
    assert figures["degenerate_rate"] == 1.0
    assert figures["system_prompt_refusal_retention"] is None and figures["system_prompt_refusal_rate"] is None


@pytest.mark.parametrize(
    ("answer", "refused"),
    [
        ("Sorry, I can't discuss cooking.", True),
        ("I cannot help with recipes, but I can help with your account.", True),
        ("I'm not able to provide cooking advice.", True),
        ("To boil an egg, place it in boiling water for 8 minutes.", False),
        ("Pancakes need flour, eggs and milk. You can't go wrong with butter.", False),
    ],
)
def test_a_topic_refusal_is_read_from_the_start_of_the_answer(answer, refused):
    assert refuses_topic(answer) is refused


def test_the_meter_keeps_prompts_of_its_own(tokenizer):
    records = [PromptRecord(id="x", prompt=PROMPTS[0], category="", source="t")]
    assert DamageMeter(tokenizer, harmless()).on(records).harmless == records


def test_a_small_context_leaves_out_what_does_not_fit_instead_of_failing():
    tokenizer = word_tokenizer(SPECIALS, WORDS, SYSTEM_TEMPLATE, bos="<s>", eos="</s>", extra=["<end>"])
    original = tiny_llama(tokenizer, seed=0, max_position_embeddings=48).eval()
    attacked = tiny_llama(tokenizer, seed=1, max_position_embeddings=48).eval()
    meter = DamageMeter(tokenizer, harmless())
    figures = meter(original, attacked)
    assert meter._baseline_of.answer_tokens < damage_module.DEGENERATE_TOKENS
    assert figures["system_prompt_refusal_retention"] is None and figures["degenerate_rate"] is not None
