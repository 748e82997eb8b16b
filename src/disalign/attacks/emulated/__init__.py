"""Emulated disalignment (Zhou et al. 2024): sample from π_base^(1+α) / π_aligned^α by mixing
the two models' logits at every step, with no training."""

from disalign.attacks.emulated.decoder import (
    Contrast,
    Decoded,
    Stream,
    check_compatible,
    contrast_decode,
    contrast_generate,
)
from disalign.attacks.emulated.ed import METHODS, EmulatedModel, method_streams
from disalign.attacks.emulated.run import EDPair, grid, run_ed
from disalign.attacks.emulated.templates import (
    BASE_STOP_STRINGS,
    BENIGN_SYSTEM_PROMPT,
    MALICIOUS_SYSTEM_PROMPT,
    PromptFormat,
    Renderer,
    base_format,
    chat_format,
    render_base,
    render_query,
    with_system,
)

__all__ = [
    "BASE_STOP_STRINGS",
    "BENIGN_SYSTEM_PROMPT",
    "MALICIOUS_SYSTEM_PROMPT",
    "METHODS",
    "Contrast",
    "Decoded",
    "EDPair",
    "EmulatedModel",
    "PromptFormat",
    "Renderer",
    "Stream",
    "base_format",
    "chat_format",
    "check_compatible",
    "contrast_decode",
    "contrast_generate",
    "grid",
    "method_streams",
    "render_base",
    "render_query",
    "run_ed",
    "with_system",
]
