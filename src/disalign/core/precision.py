"""The precision a model's matrix products run in: bf16 where the machine multiplies it natively.

bf16 runs as autocast: weights (and an optimizer's state) stay fp32, and each matrix product
casts its operands to bf16. On a CPU with AMX or AVX512-BF16 units that is several times faster
than fp32; on one without them, many times slower (README, Benchmarks), hence "auto".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal

Precision = Literal["auto", "bf16", "fp32"]

# Below this width a model's matrix products are too small for bf16 to pay for its casts, and the
# synthetic world's models (d_model ≤ 256) keep the fp32 generations their README figures were made from.
AUTO_BF16_MIN_WIDTH = 512


def native_bf16(device_type: str = "cpu") -> bool:
    """Whether this machine multiplies bf16 natively: AMX or AVX512-BF16 on a CPU, bf16 support on a GPU."""
    import torch

    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def resolve_precision(requested: str, device_type: str = "cpu", width: int | None = None) -> str:
    """ "fp32" or "bf16": "auto" is bf16 where the machine multiplies bf16 natively (and, given a model's
    width, where the model is wide enough to gain from it)."""
    if requested != "auto":
        return requested
    wide = width is None or width >= AUTO_BF16_MIN_WIDTH
    return "bf16" if wide and native_bf16(device_type) else "fp32"


def model_precision(models, requested: str) -> str:
    """The precision `requested` means for these models together (one model or a sequence)."""
    models = _as_list(models)
    widths = [getattr(model.config, "hidden_size", None) for model in models]
    width = min((w for w in widths if w), default=None)
    return resolve_precision(requested, _device_type(models[0]), width)


@contextlib.contextmanager
def inference_precision(models, requested: str) -> Iterator[str]:
    """A no-grad block whose forward passes of `models` run in the precision `requested` means for
    them; yields that precision. Open it around a whole decode: each weight is cast to bf16 once
    for the block, not once per forward pass."""
    import torch

    models = _as_list(models)
    precision = model_precision(models, requested)
    if precision == "fp32":
        with torch.no_grad():
            yield precision
        return
    # Autocast caches a weight's bf16 copy only when the weight requires grad; a frozen weight (a
    # PEFT base model's) would be cast again in every forward pass, which costs what bf16 saves.
    frozen = [p for m in models for p in m.parameters() if not p.requires_grad and p.is_floating_point()]
    try:
        for parameter in frozen:
            parameter.requires_grad_(True)
        with torch.no_grad(), torch.autocast(_device_type(models[0]), dtype=torch.bfloat16):
            yield precision
    finally:
        for parameter in frozen:
            parameter.requires_grad_(False)


def _as_list(models) -> list:
    return list(models) if isinstance(models, Sequence) else [models]


def _device_type(model) -> str:
    return next(model.parameters()).device.type
