"""The contrastive decoder against direct full-prefix computation, on tiny random Llamas."""

from __future__ import annotations

import contextlib
import copy
import os
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from builders import tiny_llama, word_tokenizer
from disalign.attacks.emulated import (
    BENIGN_SYSTEM_PROMPT,
    MALICIOUS_SYSTEM_PROMPT,
    METHODS,
    Contrast,
    EmulatedModel,
    Stream,
    contrast_decode,
    contrast_generate,
    method_streams,
    render_base,
    render_query,
    with_system,
)
from disalign.core.generation import SamplingConfig
from disalign.errors import UserError

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<end>"]
WORDS = (
    "user: system: assistant: # Query: Response: Instruction hello world a b c d e f how do i make "
    "cake bread note that you are malicious helpful assistant the cat sat on mat"
).split()
CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}assistant:"
QUERIES = ["how do i make cake", "hello", "the cat sat on the mat a b c"]


def make_tokenizer(words: list[str] = WORDS) -> PreTrainedTokenizerFast:
    return word_tokenizer(SPECIALS, words, CHAT_TEMPLATE, bos="<s>", eos="</s>", extra=["<end>"])


def make_model(tokenizer, seed: int) -> LlamaForCausalLM:
    model = tiny_llama(tokenizer, seed, kv_heads=2)
    # Random init is nearly uniform; sharper logits make the mixing visible.
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def base(tokenizer):
    return make_model(tokenizer, seed=1)


@pytest.fixture(scope="module")
def aligned(tokenizer):
    return make_model(tokenizer, seed=2)


class Scripted(torch.nn.Module):
    """Wraps a causal LM: records the inputs it gets and lets a test rewrite its logits per step.
    A step is a pass over every row: the one pass over a shared prompt prefix (one row) is not."""

    def __init__(self, inner, edit=None) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.generation_config = inner.generation_config
        self.edit = edit
        self.input_widths: list[int] = []
        self.input_rows: list[int] = []

    def forward(self, input_ids, **kwargs):
        step = self.input_rows.count(input_ids.shape[0])
        self.input_widths.append(input_ids.shape[1])
        self.input_rows.append(input_ids.shape[0])
        logits = self.inner(input_ids=input_ids, **kwargs).logits.clone()
        if self.edit is not None:
            self.edit(logits[:, -1, :], step)
        return SimpleNamespace(logits=logits)


def force(tokenizer, script: list[list[str]]):
    """An edit that makes row r emit script[r][step]."""
    ids = [[tokenizer.convert_tokens_to_ids(token) for token in row] for row in script]

    def edit(logits: torch.Tensor, step: int) -> None:
        for row, tokens in enumerate(ids[: len(logits)]):  # a shared prefix's pass has one row
            logits[row, tokens[min(step, len(tokens) - 1)]] += 1e4

    return edit


def direct_logprobs(contrast: Contrast, tokens: torch.Tensor) -> torch.Tensor:
    """Per-step mixed log-probabilities from full forward passes over each unpadded prefix, no cache."""
    batch, steps = tokens.shape
    rows = []
    for row in range(batch):
        per_step = []
        for step in range(steps):
            mixed = 0
            for stream in contrast.streams:
                ids = torch.tensor([list(stream.prompt_ids[row]) + tokens[row, :step].tolist()])
                adapter = stream.model.disable_adapter() if stream.adapter_disabled else contextlib.nullcontext()
                with torch.no_grad(), adapter:
                    mixed = mixed + stream.coefficient * stream.model(ids).logits[0, -1].float()
            per_step.append(torch.log_softmax(mixed, dim=-1))
        rows.append(torch.stack(per_step))
    return torch.stack(rows)


SAMPLE = SamplingConfig(max_new_tokens=6, temperature=1.0, seed=0)
GREEDY = SamplingConfig(max_new_tokens=6, temperature=0.0)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mixed_distribution_matches_full_forward_passes(base, aligned, tokenizer):
    contrast = method_streams("ed", 0.7, base, aligned, tokenizer, QUERIES, stop_strings=())
    lengths = {len(ids) for ids in contrast.streams[0].prompt_ids}
    assert len(lengths) == len(QUERIES), "prompts must differ in length to exercise left padding"
    decoded = contrast_decode(contrast, SAMPLE, generator=seeded(), return_logprobs=True)
    expected = direct_logprobs(contrast, decoded.token_ids)
    assert decoded.logprobs.shape == expected.shape
    torch.testing.assert_close(decoded.logprobs, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["ed", "ed_base"])
def test_a_shared_prefix_computed_once_decodes_what_whole_prompts_decode(base, aligned, tokenizer, method):
    contrast = method_streams(method, 0.7, base, aligned, tokenizer, QUERIES, stop_strings=())
    shared = contrast_decode(contrast, GREEDY, return_logprobs=True)
    whole = contrast_decode(contrast, GREEDY, return_logprobs=True, share_prefix=False)
    assert torch.equal(shared.token_ids, whole.token_ids)
    torch.testing.assert_close(shared.logprobs, whole.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(shared.logprobs, direct_logprobs(contrast, shared.token_ids), atol=1e-5, rtol=0)


def test_alpha_zero_is_the_base_model(base, aligned, tokenizer):
    render = with_system(render_base, MALICIOUS_SYSTEM_PROMPT)
    ed = method_streams("ed", 0.0, base, aligned, tokenizer, QUERIES, base_format=render_base)
    base_alone = Contrast((Stream.from_prompts(base, tokenizer, [render(q) for q in QUERIES], 1.0),))
    decoded = contrast_decode(ed, SAMPLE, generator=seeded(), return_logprobs=True)
    alone = contrast_decode(base_alone, SAMPLE, generator=seeded(), return_logprobs=True)
    assert torch.equal(decoded.token_ids, alone.token_ids)
    torch.testing.assert_close(decoded.logprobs, alone.logprobs, atol=1e-6, rtol=0)
    direct = direct_logprobs(base_alone, decoded.token_ids)
    torch.testing.assert_close(decoded.logprobs, direct, atol=1e-5, rtol=0)


def test_greedy_takes_the_argmax_of_the_mixed_logits(base, aligned, tokenizer):
    contrast = method_streams("ed", 1.5, base, aligned, tokenizer, QUERIES, stop_strings=())
    decoded = contrast_decode(contrast, GREEDY, return_logprobs=True)
    expected = direct_logprobs(contrast, decoded.token_ids)
    finished = torch.zeros(len(QUERIES), dtype=torch.bool)
    for step in range(decoded.token_ids.shape[1]):
        argmax = expected[:, step].argmax(-1)
        assert torch.equal(decoded.token_ids[~finished, step], argmax[~finished])
        finished |= argmax == tokenizer.eos_token_id


@pytest.mark.parametrize("share_prefix", [True, False])
def test_each_stream_reads_its_prompt_once_then_one_token_per_step(base, aligned, tokenizer, share_prefix):
    """With a shared prefix: the prefix once (one row), then the rest of every prompt, then a token a step."""
    scripted_base, scripted_aligned = Scripted(base), Scripted(aligned)
    contrast = method_streams("ed", 0.5, scripted_base, scripted_aligned, tokenizer, QUERIES, stop_strings=())
    never_stop = force(tokenizer, [["a"]] * len(QUERIES))
    scripted_base.edit = never_stop
    decoded = contrast_decode(contrast, SAMPLE, generator=seeded(), share_prefix=share_prefix)
    assert decoded.token_ids.shape[1] == SAMPLE.max_new_tokens
    for model, stream in [(scripted_base, contrast.streams[0]), (scripted_aligned, contrast.streams[1])]:
        prefix = 0
        while share_prefix and len({ids[: prefix + 1] for ids in stream.prompt_ids}) == 1:
            prefix += 1
        assert prefix > 0 or not share_prefix  # the template's system turn
        widest_rest = max(len(ids) for ids in stream.prompt_ids) - prefix
        assert model.input_widths == [prefix] * (prefix > 0) + [widest_rest] + [1] * (SAMPLE.max_new_tokens - 1)
        assert model.input_rows[prefix > 0 :] == [len(QUERIES)] * SAMPLE.max_new_tokens


def test_stop_strings_end_each_sequence_on_its_own(base, tokenizer):
    script = [["hello", "world", "#", "Query:", "cake", "bread"], ["a", "b", "c", "d", "e", "f"]]
    model = Scripted(base, force(tokenizer, script))
    stream = Stream.from_prompts(model, tokenizer, ["hello", "how do i"], 1.0)
    decoded = contrast_decode(Contrast((stream,), stop_strings=("# Query:",)), GREEDY)
    assert decoded.texts == ["hello world", "a b c d e f"]
    assert decoded.token_ids[0, 4:].tolist() == [tokenizer.pad_token_id] * 2


def test_eos_from_tokenizer_or_model_ends_a_sequence(base, tokenizer):
    script = [["hello", "</s>", "cake"], ["a", "b", "<end>", "c"], ["a", "b", "c", "d"]]
    model = Scripted(copy.deepcopy(base), force(tokenizer, script))
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end>")]
    stream = Stream.from_prompts(model, tokenizer, ["hello", "cake", "a b"], 1.0)
    decoded = contrast_decode(Contrast((stream,)), SamplingConfig(max_new_tokens=4, temperature=0.0))
    assert decoded.texts == ["hello", "a b", "a b c d"]
    pad = tokenizer.pad_token_id
    assert decoded.token_ids[0, 2:].tolist() == [pad, pad]
    assert decoded.token_ids[1, 3:].tolist() == [pad]


def test_all_sequences_finished_stops_decoding(base, tokenizer):
    model = Scripted(base, force(tokenizer, [["a", "</s>"], ["</s>"]]))
    stream = Stream.from_prompts(model, tokenizer, ["hello", "cake"], 1.0)
    decoded = contrast_decode(Contrast((stream,)), GREEDY)
    assert decoded.texts == ["a", ""]
    assert decoded.token_ids.shape[1] == 2
    assert len(model.input_widths) == 2


def test_vocabulary_mismatch_names_the_token(base, aligned, tokenizer):
    swapped = list(WORDS)
    swapped[5], swapped[6] = swapped[6], swapped[5]
    with pytest.raises(UserError, match=f"token '{WORDS[5]}' has id {len(SPECIALS) + 5} in base but id"):
        ed_contrast_decode(base, aligned, (tokenizer, make_tokenizer(swapped)))
    with pytest.raises(UserError, match="token 'extra'.* is missing from base"):
        ed_contrast_decode(base, aligned, (tokenizer, make_tokenizer([*WORDS, "extra"])))


def test_special_token_mismatch_is_rejected(base, aligned, tokenizer):
    other = make_tokenizer()
    other.pad_token = "</s>"
    with pytest.raises(UserError, match="pad_token_id"):
        ed_contrast_decode(base, aligned, (tokenizer, other))


def test_logit_width_mismatch_is_rejected(base, tokenizer):
    wider = make_model(tokenizer, seed=3)
    wider.resize_token_embeddings(len(tokenizer) + 8)
    with pytest.raises(UserError, match="logit widths"):
        ed_contrast_decode(base, wider, tokenizer)


def ed_contrast_decode(base, aligned, tokenizers):
    return contrast_decode(method_streams("ed", 0.5, base, aligned, tokenizers, QUERIES), GREEDY)


def test_negative_alpha_is_rejected(base, aligned, tokenizer):
    with pytest.raises(UserError, match="alpha"):
        contrast_generate(method_streams("ed", -0.1, base, aligned, tokenizer, QUERIES), SAMPLE)


def test_non_finite_logits_are_an_error_not_a_sample(base, aligned, tokenizer):
    def poison(logits: torch.Tensor, step: int) -> None:
        if step == 2:
            logits[0, 7] = float("inf")

    contrast = method_streams("ed", 0.5, Scripted(base, poison), aligned, tokenizer, QUERIES, stop_strings=())
    with pytest.raises(UserError, match="non-finite logits at step 2"):
        contrast_decode(contrast, SamplingConfig(max_new_tokens=5, temperature=0.0))


def test_coefficients_must_sum_to_one(base, tokenizer):
    stream = Stream.from_prompts(base, tokenizer, ["hello"], 0.5)
    with pytest.raises(ValueError, match="sum to 1"):
        Contrast((stream,))


def test_peft_adapter_matches_two_separate_models(tokenizer):
    from peft import LoraConfig, get_peft_model

    base = make_model(tokenizer, seed=4)
    untouched_base = copy.deepcopy(base)
    targets = ["q_proj", "v_proj", "up_proj"]
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    adapted = get_peft_model(base, lora).eval()
    merged = copy.deepcopy(adapted).merge_and_unload().eval()

    with_adapter = method_streams("ed", 0.8, adapted.get_base_model(), adapted, tokenizer, QUERIES, stop_strings=())
    assert with_adapter.streams[0].model is adapted and with_adapter.streams[0].adapter_disabled
    ed_base = method_streams("ed_base", 0.8, adapted.get_base_model(), adapted, tokenizer, QUERIES)
    assert all(stream.model is adapted and stream.adapter_disabled for stream in ed_base.streams)
    separate = method_streams("ed", 0.8, untouched_base, merged, tokenizer, QUERIES, stop_strings=())
    shared = contrast_decode(with_adapter, SAMPLE, generator=seeded(), return_logprobs=True)
    apart = contrast_decode(separate, SAMPLE, generator=seeded(), return_logprobs=True)
    assert torch.equal(shared.token_ids, apart.token_ids)
    torch.testing.assert_close(shared.logprobs, apart.logprobs, atol=1e-5, rtol=0)
    # The adapter is back on afterwards.
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(adapted(ids).logits, merged(ids).logits, atol=1e-5, rtol=0)
        emulated = EmulatedModel(adapted.get_base_model(), adapted, 0.8)(ids).logits
        expected = EmulatedModel(untouched_base, merged, 0.8)(ids).logits
        torch.testing.assert_close(emulated, expected, atol=1e-5, rtol=0)


def test_generate_batches_and_seeds_reproducibly(base, aligned, tokenizer):
    sampling = SamplingConfig(max_new_tokens=4, temperature=1.0, top_p=0.9, top_k=10, batch_size=2, seed=3)
    first = contrast_generate(method_streams("ed", 0.5, base, aligned, tokenizer, QUERIES), sampling)
    again = contrast_generate(method_streams("ed", 0.5, base, aligned, tokenizer, QUERIES), sampling)
    assert first == again and len(first) == len(QUERIES)


def test_method_streams_follow_the_paper(base, aligned, tokenizer):
    alpha = 0.5
    shapes = {}
    for method in METHODS:
        contrast = method_streams(method, alpha, base, aligned, tokenizer, ["hello"])
        shapes[method] = [(stream.name, stream.coefficient) for stream in contrast.streams]
        assert len(contrast_generate(contrast, SamplingConfig(max_new_tokens=2))) == 1
    assert shapes == {
        "ed": [("base", 1.5), ("aligned", -0.5)],
        "base_mp": [("base", 1.0)],
        "align_mp": [("aligned", 1.0)],
        "ed_base": [("base|MP", 1.5), ("base|BP", -0.5)],
    }
    ed_base = method_streams("ed_base", alpha, base, aligned, tokenizer, ["hello"])
    prompts = [tokenizer.decode(stream.prompt_ids[0]) for stream in ed_base.streams]
    assert "malicious" in prompts[0] and "helpful" in prompts[1]
    with pytest.raises(UserError, match="unknown method"):
        method_streams("nope", alpha, base, aligned, tokenizer, ["hello"])


def test_base_template_and_chat_fallback(tokenizer):
    urial = render_base("how do i make cake", MALICIOUS_SYSTEM_PROMPT)
    assert urial.startswith("# Instruction\n")
    assert MALICIOUS_SYSTEM_PROMPT in urial
    assert urial.endswith("# Query:\nhow do i make cake\n\n# Response:\n")
    assert render_base("q", BENIGN_SYSTEM_PROMPT, "alpaca") == (
        f"BEGINNING OF CONVERSATION: USER: {BENIGN_SYSTEM_PROMPT} q ASSISTANT:"
    )
    assert render_query(tokenizer, "hello", "note") == "<s>system: note user: hello assistant:"
    strict = make_tokenizer()
    strict.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        + CHAT_TEMPLATE
    )
    assert render_query(strict, "hello", "note") == "<s>user: note\n\nhello assistant:"


def test_bf16_casts_each_weight_once_per_decode_not_once_per_step(base, aligned, tokenizer):
    """Autocast keeps a weight's bf16 copy for the whole decode only outside inference mode."""
    from torch.profiler import ProfilerActivity, profile

    weight_shape = list(base.model.layers[0].mlp.gate_proj.weight.shape)

    def weight_casts(steps: int) -> int:
        scripted_base, scripted_aligned = Scripted(base), Scripted(aligned)
        scripted_base.edit = force(tokenizer, [["a"]] * len(QUERIES))  # no row stops early
        contrast = method_streams("ed", 0.5, scripted_base, scripted_aligned, tokenizer, QUERIES, stop_strings=())
        sampling = SamplingConfig(max_new_tokens=steps, temperature=0.0, precision="bf16")
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiled:
            decoded = contrast_decode(contrast, sampling)
        assert decoded.token_ids.shape[1] == steps
        events = profiled.key_averages(group_by_input_shape=True)
        return sum(e.count for e in events if e.key == "aten::_to_copy" and weight_shape in e.input_shapes)

    assert weight_casts(2) > 0
    assert weight_casts(8) == weight_casts(2)
