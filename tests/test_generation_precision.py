"""Precision of generation and training: bf16 autocast where the CPU multiplies bf16 natively, fp32 on request."""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from builders import tiny_llama, word_tokenizer
from disalign.core.generation import SamplingConfig, generate
from disalign.core.options import SamplingOptions
from disalign.core.precision import inference_precision, model_precision, resolve_precision
from disalign.errors import UserError, validate_config
from disalign.training.config import TrainingConfig
from disalign.training.sft import build_trainer, mixed_precision

WORDS = "user: assistant: hello world how do i make cake bread the cat sat on mat".split()
TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}assistant:"


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(["<pad>", "<s>", "</s>", "<unk>"], WORDS, TEMPLATE, bos="<s>", eos="</s>")


def _native(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)


@pytest.mark.parametrize(
    ("native", "width", "expected"), [(True, 576, "bf16"), (True, 128, "fp32"), (False, 576, "fp32")]
)
def test_auto_is_bf16_only_on_native_bf16_and_a_wide_enough_model(monkeypatch, tokenizer, native, width, expected):
    _native(monkeypatch, native)
    model = tiny_llama(tokenizer, hidden=width, layers=1)
    assert model_precision(model, "auto") == expected
    assert model_precision(model, "fp32") == "fp32" and model_precision(model, "bf16") == "bf16"
    assert resolve_precision("auto") == ("bf16" if native else "fp32")


def test_bf16_multiplies_in_bf16_keeps_fp32_weights_and_refreezes_a_frozen_model(tokenizer):
    model = get_peft_model(tiny_llama(tokenizer), LoraConfig(r=2, target_modules=["q_proj"])).eval()
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    seen = []
    mlp = model.get_base_model().model.layers[0].mlp.down_proj
    mlp.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    ids = torch.tensor([[1, 5, 6, 7]])
    with inference_precision(model, "bf16") as precision:
        model(input_ids=ids)
    with inference_precision(model, "fp32"):
        model(input_ids=ids)
    assert precision == "bf16" and seen == [torch.bfloat16, torch.float32]
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {name for name, p in model.named_parameters() if not p.requires_grad} == frozen


def test_generate_reads_the_precision_of_its_sampling(tokenizer):
    model = tiny_llama(tokenizer).eval()
    seen = []
    model.lm_head.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False)]
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        seen.clear()
        generate(model, tokenizer, prompts, SamplingConfig(max_new_tokens=2, temperature=0, precision=precision))
        assert seen and set(seen) == {dtype}


def test_precision_is_a_sampling_option():
    assert SamplingOptions(precision="fp32").sampling().precision == "fp32"
    assert SamplingOptions().sampling().precision == "auto"
    with pytest.raises(UserError, match="precision"):
        validate_config(SamplingOptions, {"precision": "fp16"}, "eval")


@pytest.mark.parametrize(
    ("width", "precision", "bf16"), [(576, "auto", True), (576, "fp32", False), (32, "auto", False)]
)
def test_training_autocasts_to_bf16_where_its_precision_means_bf16(monkeypatch, tokenizer, width, precision, bf16):
    _native(monkeypatch, True)
    model = tiny_llama(tokenizer, hidden=width, layers=1)
    assert mixed_precision(model, TrainingConfig(precision=precision)) == {"bf16": bf16}


def test_a_bf16_training_step_multiplies_in_bf16_and_keeps_fp32_weights(tokenizer, tmp_path):
    model = tiny_llama(tokenizer)
    seen = []
    model.model.layers[0].mlp.down_proj.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    conversation = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}]
    config = TrainingConfig(precision="bf16", batch_size=2, max_length=32)
    trainer = build_trainer(model, tokenizer, [{"messages": conversation}] * 2, config, tmp_path)
    trainer.train()
    assert trainer.args.bf16 and seen and set(seen) == {torch.bfloat16}
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    assert all(math.isfinite(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry)
