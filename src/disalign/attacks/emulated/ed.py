"""Emulated disalignment (Zhou et al. 2024) and the paper's training-free baselines.

ED samples from π_base^(1+α) / π_aligned^α, i.e. the logits z = (1+α)·z_base − α·z_aligned,
with no training. Each method is a `Contrast` of streams for the generic decoder:

    ed        (1+α)·z_base(·|MP) − α·z_aligned(·|its default prompt); α = 0 is the base model alone
    base_mp   z_base(·|MP)                         the base model under the malicious prompt
    align_mp  z_aligned(·|MP)                      the aligned model under the malicious prompt
    ed_base   (1+α)·z_base(·|MP) − α·z_base(·|BP)  the base model contrasted with itself

MP and BP are the paper's malicious and benign system prompts. Formats default to the URIAL
template for the base model (a base model has no chat template) and the chat template for the
aligned one; stop strings to URIAL's whenever the base model reads it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import SimpleNamespace

import torch

from disalign.attacks.emulated import templates
from disalign.attacks.emulated.decoder import BASE_ADAPTER, Contrast, Stream
from disalign.attacks.emulated.templates import PromptFormat
from disalign.errors import UserError

METHODS = ("ed", "base_mp", "align_mp", "ed_base")


def method_streams(
    method: str,
    alpha: float,
    base,
    aligned,
    tokenizers,
    queries: Sequence[str],
    *,
    base_format: PromptFormat | None = None,
    aligned_format: PromptFormat | None = None,
    stop_strings: Sequence[str] | None = None,
) -> Contrast:
    """The contrast behind one of `METHODS` for these queries. `tokenizers` is one tokenizer
    shared by both models or a (base, aligned) pair."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise UserError(f"alpha must be a finite number >= 0, got {alpha}")
    base_tokenizer, aligned_tokenizer = tokenizers if isinstance(tokenizers, tuple | list) else (tokenizers,) * 2
    if stop_strings is None:
        stop_strings = templates.BASE_STOP_STRINGS["urial"] if base_format is None and method != "align_mp" else ()
    base_format = base_format or templates.base_format("urial")
    aligned_format = aligned_format or templates.chat_format(aligned_tokenizer)
    malicious, benign = templates.MALICIOUS_SYSTEM_PROMPT, templates.BENIGN_SYSTEM_PROMPT
    base_model, adapter_disabled = _base_runner(base, aligned)

    def stream(model, tokenizer, prompt_format, system, coefficient, name, base_side=True) -> Stream:
        prompts = [prompt_format(query, system) for query in queries]
        disabled = adapter_disabled and base_side
        return Stream.from_prompts(model, tokenizer, prompts, coefficient, name=name, adapter_disabled=disabled)

    def base_under(system: str, coefficient: float, name: str) -> Stream:
        return stream(base_model, base_tokenizer, base_format, system, coefficient, name)

    if method == "align_mp":
        streams = (stream(aligned, aligned_tokenizer, aligned_format, malicious, 1.0, "aligned", base_side=False),)
    elif method == "base_mp" or alpha == 0:  # ED at α = 0 is the base model: no aligned pass at weight 0
        streams = (base_under(malicious, 1.0, "base"),)
    elif method == "ed":
        aligned_stream = stream(aligned, aligned_tokenizer, aligned_format, None, -alpha, "aligned", base_side=False)
        streams = (base_under(malicious, 1 + alpha, "base"), aligned_stream)
    else:
        streams = (base_under(malicious, 1 + alpha, "base|MP"), base_under(benign, -alpha, "base|BP"))
    return Contrast(streams, tuple(stop_strings))


def _base_runner(base, aligned) -> tuple[object, bool]:
    """The model that computes base logits, and whether its adapter must be switched off.

    PEFT injects the adapter into the base model's own modules, so when the aligned model is
    an adapter over `base`, calling `base` directly would run the adapter too.
    """
    from peft import PeftModel

    if isinstance(aligned, PeftModel) and (base is aligned or base is aligned.get_base_model()):
        return aligned, True
    return base, False


class EmulatedModel(torch.nn.Module):
    """ED at one α as a causal LM: both models read the same ids, their logits mixed. Lets any
    measure that takes a model (the damage measure's KL) read the emulated distribution."""

    def __init__(self, base, aligned, alpha: float):
        super().__init__()
        self.base, self.aligned, self.alpha = base, aligned, alpha

    def forward(self, input_ids, attention_mask=None, **_):
        runner, adapter_disabled = _base_runner(self.base, self.aligned)
        without_adapter = {"adapter_names": [BASE_ADAPTER] * len(input_ids)} if adapter_disabled else {}
        base = runner(input_ids=input_ids, attention_mask=attention_mask, **without_adapter).logits.float()
        if self.alpha == 0:
            return SimpleNamespace(logits=base)
        aligned = self.aligned(input_ids=input_ids, attention_mask=attention_mask).logits.float()
        return SimpleNamespace(logits=(1 + self.alpha) * base - self.alpha * aligned)
