"""The damage meter against a direct, one-prompt-at-a-time computation, for full models and adapters."""

from __future__ import annotations

import copy
import os
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from builders import tiny_llama, word_tokenizer
from disalign.core.damage import DamageMeter
from disalign.core.generation import SamplingConfig
from disalign.core.logprobs import kl_per_position
from disalign.data import PromptRecord
from disalign.errors import UserError

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<end>"]
WORDS = "user: assistant: tell me how to make a cake write poem about the sea plan trip city".split()
TEMPLATE = "{{ bos_token }}{% for m in messages %}user: {{ m['content'] }} {% endfor %}assistant:"
NEW_KEYS = (
    "capability_accuracy",
    "capability_drop",
    "degenerate_rate",
    "system_prompt_refusal_retention",
    "system_prompt_refusal_rate",
)
PROMPTS = ["tell me a poem", "how to make a cake about the sea", "plan", "write a poem about the city trip"]


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(SPECIALS, WORDS, TEMPLATE, bos="<s>", eos="</s>", extra=["<end>"])


def harmless() -> list[PromptRecord]:
    return [PromptRecord(id=str(i), prompt=p, category="", source="test") for i, p in enumerate(PROMPTS)]


def model_pair(tokenizer):
    original = tiny_llama(tokenizer, seed=0).eval()
    attacked = copy.deepcopy(original)
    with torch.no_grad():
        for parameter in attacked.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    for model in (original, attacked):  # sharper next-token distributions than the random init's
        with torch.no_grad():
            model.lm_head.weight.mul_(10)
        model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<end>")
    return original, attacked


def direct(original, attacked, tokenizer, prompt: str) -> tuple[float, float]:
    """First-token and mean KL along the original's greedy response, for one unpadded prompt."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<end>")
    sequence = ids
    with torch.no_grad():
        for _ in range(32):
            token = original(input_ids=sequence).logits[:, -1].argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, token], dim=1)
            if int(token) == end:
                break
        kl = kl_per_position(original, attacked, sequence)[0, ids.shape[1] - 1 :]
    return float(kl[0]), float(kl.mean())


def damage(original, attacked, tokenizer, prompts, **options):
    return DamageMeter(tokenizer, prompts, **options)(original, attacked)


def test_damage_matches_a_direct_computation(tokenizer):
    original, attacked = model_pair(tokenizer)
    expected = [direct(original, attacked, tokenizer, p) for p in PROMPTS]
    for batch_size in (1, 3):
        measured = damage(original, attacked, tokenizer, harmless(), batch_size=batch_size)
        assert set(measured) >= {"kl_first_token", "kl_mean_32", "safe_accuracy_delta", *NEW_KEYS}
        assert measured["kl_first_token"] == pytest.approx(sum(f for f, _ in expected) / len(PROMPTS), rel=1e-4)
        assert measured["kl_mean_32"] == pytest.approx(sum(m for _, m in expected) / len(PROMPTS), rel=1e-4)
        assert measured["safe_accuracy_delta"] is None
    assert measured["kl_first_token"] > 1e-3


def test_an_unchanged_model_has_no_damage_and_accuracy_delta(tokenizer):
    original, attacked = model_pair(tokenizer)
    same = damage(original, copy.deepcopy(original), tokenizer, harmless())
    assert same["kl_first_token"] == pytest.approx(0, abs=1e-6) and same["kl_mean_32"] == pytest.approx(0, abs=1e-6)
    sampling = SamplingConfig(max_new_tokens=4, temperature=0)
    task = ScriptedTaskJudge([[True, True, True, False], [True, False, False, False], [True, True, False, False]])
    meter = DamageMeter(tokenizer, harmless(), task_judge=task, sampling=sampling)
    assert meter(original, attacked)["safe_accuracy_delta"] == pytest.approx(0.25 - 0.75)
    # the original's accuracy is measured once: a second attacked model costs one more judgement
    assert meter(original, copy.deepcopy(attacked))["safe_accuracy_delta"] == pytest.approx(0.5 - 0.75)
    assert task.calls == 3
    undecided = DamageMeter(tokenizer, harmless(), task_judge=ScriptedTaskJudge([[None] * 4] * 2), sampling=sampling)
    assert undecided(original, attacked)["safe_accuracy_delta"] is None


def test_an_attacked_model_answers_the_task_through_its_own_responder(tokenizer):
    original, attacked = model_pair(tokenizer)
    answered = []

    def respond(model, prompts):
        answered.append(model)
        return ["" for _ in prompts]

    task = ScriptedTaskJudge([[True] * 4, [False] * 4])
    meter = DamageMeter(tokenizer, harmless(), task_judge=task, sampling=SamplingConfig(max_new_tokens=4))
    assert meter(original, attacked, respond)["safe_accuracy_delta"] == pytest.approx(-1.0)
    assert answered == [attacked]


class ScriptedTaskJudge:
    """A task judge whose `correct` verdicts are scripted, one list per call."""

    name = "task"

    def __init__(self, script):
        self.script, self.calls = script, 0

    def judge(self, prompts, responses):
        verdicts = [SimpleNamespace(correct=value) for value in self.script[self.calls]]
        self.calls += 1
        return verdicts


def test_damage_of_a_peft_adapter(tokenizer):
    from peft import LoraConfig, get_peft_model

    original, _ = model_pair(tokenizer)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=True)
    untrained = get_peft_model(copy.deepcopy(original), config).eval()
    assert damage(original, untrained, tokenizer, harmless())["kl_mean_32"] == pytest.approx(0, abs=1e-6)
    trained = get_peft_model(copy.deepcopy(original), config).eval()
    with torch.no_grad():
        for name, parameter in trained.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    measured = damage(original, trained, tokenizer, harmless())
    expected = [direct(original, trained, tokenizer, p) for p in PROMPTS]
    assert measured["kl_mean_32"] > 1e-3
    assert measured["kl_mean_32"] == pytest.approx(sum(m for _, m in expected) / len(PROMPTS), rel=1e-4)
    # the adapter as the original: the attacked side reads through a PEFT wrapper too
    assert damage(trained, trained, tokenizer, harmless())["kl_first_token"] == pytest.approx(0, abs=1e-6)


def test_bad_input(tokenizer):
    original, _ = model_pair(tokenizer)
    with pytest.raises(UserError, match="no harmless prompts"):
        damage(original, original, tokenizer, [])
    bigger = tiny_llama(tokenizer, seed=1, vocab_size=len(tokenizer) + 3).eval()
    with pytest.raises(UserError, match="does not match the original"):
        damage(original, bigger, tokenizer, harmless())
