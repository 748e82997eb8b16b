"""vLLM as a generation backend: the same chat rendering, seeds and outputs as `core.generation`,
through `vllm.LLM.generate` (paged attention, continuous batching; CUDA GPUs).

vLLM is optional (`pip install 'disalign[vllm]'`) and imported only here, when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from disalign.core.evaluate import Respond, rendered_prompts
from disalign.core.generation import SamplingConfig
from disalign.errors import UserError


def _vllm():
    try:
        import vllm
    except ImportError:
        raise UserError(
            "backend vllm: vLLM is not installed (pip install 'disalign[vllm]' on a CUDA machine), "
            "or use backend transformers"
        ) from None
    return vllm


def load_engine(source: str, **engine_options: Any):
    """A `vllm.LLM` over a model source (HF directory, .gguf or 'smollm2', resolved as everywhere).

    `engine_options` go to `vllm.LLM` as they are: tensor_parallel_size, gpu_memory_utilization,
    dtype, max_model_len, ...
    """
    from disalign.core.models import resolve_model

    vllm = _vllm()
    resolved = resolve_model(source)
    if resolved.adapter is not None:
        raise UserError(f"backend vllm: {source} is a LoRA adapter; merge it into its base model first")
    return vllm.LLM(model=str(resolved.path), **{"seed": 0, **engine_options})


def sampling_params(sampling: SamplingConfig, seed: int):
    """vLLM's SamplingParams for our sampling settings (temperature 0: greedy; top_k 0: all tokens)."""
    return _vllm().SamplingParams(
        n=1,
        max_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k or -1,
        seed=seed,
        skip_special_tokens=True,
    )


def generate(engine, prompts: Sequence[str], sampling: SamplingConfig) -> list[str]:
    """Continue already-rendered prompts, as `core.generation.generate` does: only new text, stripped.

    Prompts go in as token ids without added special tokens (the chat template has its own), and
    each prompt gets its own seed (the sampling seed plus its index), so a response does not
    depend on which other prompts share its batch.
    """
    tokenizer = engine.get_tokenizer()
    inputs = [{"prompt_token_ids": tokenizer(p, add_special_tokens=False)["input_ids"]} for p in prompts]
    params = [sampling_params(sampling, sampling.seed + index) for index in range(len(prompts))]
    outputs = engine.generate(inputs, params, use_tqdm=False)
    return [output.outputs[0].text.strip() for output in outputs]


def vllm_responder(engine, sampling: SamplingConfig) -> Respond:
    """`core.evaluate.chat_responder` on a vLLM engine: answers each record's conversation."""

    def respond(batch, seed: int) -> list[str]:
        rendered = rendered_prompts(engine.get_tokenizer(), batch)
        return generate(engine, rendered, replace(sampling, seed=seed))

    return respond
