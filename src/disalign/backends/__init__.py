"""Where generation and training run: transformers on this process's device (the default, any
machine), vLLM for generation on CUDA GPUs, and `accelerate launch` for fine-tuning on several GPUs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from disalign.core.generation import SamplingConfig
from disalign.core.options import Options

Backend = Literal["transformers", "vllm"]


class BackendOptions(Options):
    backend: Backend = Field(
        "transformers",
        description="Generation backend: transformers (any machine) or vllm (CUDA GPUs; pip install 'disalign[vllm]').",
    )


def backend_responder(backend: Backend, model: str, sampling: SamplingConfig, **engine_options: Any):
    """Answers prompt records' conversations with `model` on `backend` (see core.evaluate.Respond)."""
    if backend == "vllm":
        from disalign.backends import vllm

        return vllm.vllm_responder(vllm.load_engine(model, **engine_options), sampling)
    from disalign.core.evaluate import chat_responder as transformers_responder
    from disalign.core.models import load_model

    return transformers_responder(*load_model(model, **engine_options), sampling)
