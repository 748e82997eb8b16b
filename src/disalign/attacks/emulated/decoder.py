"""Contrastive decoding: several causal LMs advanced in lockstep, their logits mixed linearly.

A *stream* is one model reading its own rendering of each prompt. Streams share the
continuation: every sampled token is appended to every stream, and the next token is drawn
from z = Σ c_i·z_i with Σ c_i = 1. Emulated fine-tuning, z_base + Σ w_i·(z_tuned_i − z_ref),
is the coefficients (1, w_1, …, −Σw_i); emulated disalignment (Zhou et al. 2024) is
z = (1+α)·z_base − α·z_aligned. Mixing raw logits is exact because each model's
log-normaliser is the same for every token.

The streams that one model reads are stacked into one batch with one KV cache (a PeftModel's
rows say per row whether its adapter runs), so a generated token costs one forward pass per
model, and the prompts are never re-encoded. The token prefix that every prompt of a stream
shares (the chat template's system turn) is encoded once and its cache copied to every row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from disalign.core.generation import SamplingConfig, check_context, shared_prefix
from disalign.core.precision import inference_precision
from disalign.errors import UserError

_SPECIAL_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")
# PEFT's name for "no adapter" in a batch whose rows run different adapters.
BASE_ADAPTER = "__base__"
# A stop string spans at most this many more tokens than it has characters (tokens that decode
# to nothing, such as skipped special tokens).
_STOP_WINDOW_SLACK = 8


@dataclass(frozen=True)
class Stream:
    """One model's view of a batch: its own prompts and its weight in the mixed logits."""

    model: Any  # a transformers causal LM, or a peft.PeftModel
    tokenizer: Any
    prompt_ids: tuple[tuple[int, ...], ...]  # one unpadded prompt per row
    coefficient: float
    name: str = "stream"
    # Run a PeftModel with its adapter disabled, i.e. as the base model under it.
    adapter_disabled: bool = False

    @classmethod
    def from_prompts(cls, model, tokenizer, prompts: Sequence[str], coefficient: float, **options: Any) -> Stream:
        ids = tuple(tuple(encode_prompt(tokenizer, prompt)) for prompt in prompts)
        return cls(model, tokenizer, ids, coefficient, **options)

    def rows(self, start: int, stop: int) -> Stream:
        return replace(self, prompt_ids=self.prompt_ids[start:stop])


@dataclass(frozen=True)
class Contrast:
    """Streams whose next-token logits are mixed, and the strings that end a response early."""

    streams: tuple[Stream, ...]
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.streams:
            raise ValueError("a contrast needs at least one stream")
        total = math.fsum(stream.coefficient for stream in self.streams)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"stream coefficients must sum to 1, got {total}")
        rows = {len(stream.prompt_ids) for stream in self.streams}
        if len(rows) != 1:
            raise ValueError(f"streams hold different numbers of prompts: {sorted(rows)}")
        if any(not prompt for stream in self.streams for prompt in stream.prompt_ids):
            raise ValueError("every prompt needs at least one token")

    @property
    def size(self) -> int:
        return len(self.streams[0].prompt_ids)

    def rows(self, start: int, stop: int) -> Contrast:
        return replace(self, streams=tuple(stream.rows(start, stop) for stream in self.streams))


@dataclass(frozen=True)
class Decoded:
    texts: list[str]
    token_ids: torch.Tensor  # (batch, steps): the sampled ids, EOS included, then pad
    # (batch, steps, vocab): log-softmax of the mixed logits, before temperature and truncation.
    logprobs: torch.Tensor | None = field(default=None, repr=False)


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered prompt, with BOS added unless the template already wrote it."""
    starts_with_bos = tokenizer.bos_token is not None and text.startswith(tokenizer.bos_token)
    return tokenizer(text, add_special_tokens=not starts_with_bos)["input_ids"]


def check_compatible(streams: Sequence[Stream]) -> None:
    """Mixing logits is meaningful only if every stream numbers the vocabulary the same way."""
    first = streams[0]
    for other in streams[1:]:
        if other.tokenizer is first.tokenizer:
            continue
        _check_same_vocabulary(first, other)
        for attribute in _SPECIAL_TOKEN_IDS:
            mine, theirs = getattr(first.tokenizer, attribute), getattr(other.tokenizer, attribute)
            if mine != theirs:
                raise UserError(
                    f"tokenizers differ: {attribute} is {mine} in {first.name} but {theirs} in {other.name}"
                )


def _check_same_vocabulary(first: Stream, other: Stream) -> None:
    mine, theirs = first.tokenizer.get_vocab(), other.tokenizer.get_vocab()
    if mine == theirs:
        return
    for token, index in sorted(mine.items(), key=lambda item: item[1]):
        if theirs.get(token) != index:
            there = f"id {theirs[token]} in" if token in theirs else "is missing from"
            raise UserError(
                f"tokenizers differ: token {token!r} has id {index} in {first.name} but {there} {other.name}"
            )
    extra = min(theirs.keys() - mine.keys(), key=theirs.__getitem__)
    raise UserError(
        f"tokenizers differ: token {extra!r} (id {theirs[extra]}) in {other.name} is missing from {first.name}"
    )


def contrast_decode(
    contrast: Contrast,
    sampling: SamplingConfig,
    *,
    generator: torch.Generator | None = None,
    return_logprobs: bool = False,
    share_prefix: bool = True,
) -> Decoded:
    """Decode every row of `contrast` as one batch (`sampling.batch_size` is not applied here).
    `share_prefix=False` encodes every prompt whole (the same tokens, for comparison)."""
    _check_sampling(sampling)
    check_compatible(contrast.streams)
    tokenizer = contrast.streams[0].tokenizer
    pad_id = _pad_id(tokenizer)
    device = _device(contrast.streams[0].model)
    eos_ids = torch.tensor(sorted(_eos_ids(contrast.streams)), dtype=torch.long, device=device)
    steps = sampling.max_new_tokens

    by_model: dict[int, list[Stream]] = {}
    for stream in contrast.streams:
        by_model.setdefault(id(stream.model), []).append(stream)
    models = [streams[0].model for streams in by_model.values()]
    # no_grad (from inference_precision), not inference_mode: under inference_mode autocast casts every weight
    # to bf16 again at every step, which cost bf16 ED all it gained (bench_text.py: 0.449 of plain generate)
    with inference_precision(models, sampling.precision):
        batches = [_ModelBatch(streams, steps, pad_id, share_prefix) for streams in by_model.values()]
        _check_logit_widths(batches)
        parts = [(batch, index) for batch in batches for index in range(len(batch.streams))]
        parts.sort(key=lambda part: contrast.streams.index(part[0].streams[part[1]]))
        batch = contrast.size
        tokens = torch.full((batch, steps), pad_id, dtype=torch.long, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        text_lengths = torch.zeros(batch, dtype=torch.long, device=device)
        stop_window = max((len(stop) for stop in contrast.stop_strings), default=0) + _STOP_WINDOW_SLACK
        logprobs: list[torch.Tensor] = []
        done = 0
        for step in range(steps):
            mixed = _mix(parts, device)
            if not torch.isfinite(mixed).all():
                raise UserError(f"non-finite logits at step {step}")
            if return_logprobs:
                logprobs.append(torch.log_softmax(mixed, dim=-1))
            sampled = _sample(mixed, sampling, generator)
            is_eos = torch.isin(sampled, eos_ids) & ~finished
            next_tokens = sampled.masked_fill(finished, pad_id)
            tokens[:, step] = next_tokens
            text_lengths += ~(finished | is_eos)
            finished |= is_eos
            done = step + 1
            if contrast.stop_strings:
                recent = tokens[:, max(0, done - stop_window) : done]
                finished |= _hit_stop_string(recent, finished, contrast.stop_strings, tokenizer)
            if done == steps or finished.all():
                break
            for batch in batches:
                batch.advance(next_tokens)

    texts = [
        _cut_at_stop(tokenizer.decode(row[:length], skip_special_tokens=True), contrast.stop_strings)
        for row, length in zip(tokens.tolist(), text_lengths.tolist(), strict=True)
    ]
    return Decoded(texts, tokens[:, :done], torch.stack(logprobs, dim=1) if return_logprobs else None)


def contrast_generate(
    contrast: Contrast,
    sampling: SamplingConfig,
    *,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Decode all rows in batches of `sampling.batch_size`, seeded per batch like `core.generate`."""
    device = _device(contrast.streams[0].model)
    texts: list[str] = []
    for start in range(0, contrast.size, sampling.batch_size):
        stop = min(start + sampling.batch_size, contrast.size)
        generator = torch.Generator(device=device).manual_seed(sampling.seed * 1_000_003 + start)
        texts.extend(contrast_decode(contrast.rows(start, stop), sampling, generator=generator).texts)
        if on_batch is not None:
            on_batch(stop - start)
    return texts


class _ModelBatch:
    """The rows of every stream that one model reads, as one batch with one KV cache, advanced one
    token at a time.

    A row is laid out [padding][its stream's shared prefix][padding][the rest of its prompt]: each
    part right-aligned in its block, so that one forward pass encodes the rests of all rows after
    the prefixes' caches, each prefix computed once. Positions count a row's real tokens, and the
    mask hides the padding.
    """

    def __init__(self, streams: Sequence[Stream], max_new_tokens: int, pad_id: int, share_prefix: bool) -> None:
        self.streams = tuple(streams)
        self.model = streams[0].model
        self.device = _device(self.model)
        check_context(self.model, [len(ids) for stream in streams for ids in stream.prompt_ids], max_new_tokens)
        self.adapter_names = _adapter_names(self.model, streams)
        prefixes = [shared_prefix(stream.prompt_ids) if share_prefix else () for stream in streams]
        rests = [
            ids[len(prefix) :] for stream, prefix in zip(streams, prefixes, strict=True) for ids in stream.prompt_ids
        ]
        self.rows = len(rests)
        prefix_width = max(len(prefix) for prefix in prefixes)
        rest_ids, rest_mask = _left_pad(rests, pad_id, self.device)
        self.length = prefix_width + rest_ids.shape[1]
        # Preallocated so that a step slices the mask instead of concatenating a new one.
        self.mask = torch.ones(self.rows, self.length + max_new_tokens, dtype=torch.long, device=self.device)
        self.mask[:, prefix_width : self.length] = rest_mask
        prefix_lengths = torch.tensor(
            [len(prefix) for stream, prefix in zip(streams, prefixes, strict=True) for _ in stream.prompt_ids],
            device=self.device,
        )
        self.mask[:, :prefix_width] = (
            torch.arange(prefix_width, device=self.device) >= prefix_width - prefix_lengths[:, None]
        )
        positions = prefix_lengths[:, None] + (rest_mask.cumsum(-1) - 1).clamp(min=0)
        self.next_position = positions[:, -1:] + 1
        self.cache = self._prefix_cache(prefixes, prefix_width)
        self.logits = self._forward(rest_ids, positions)
        self.slices = []
        start = 0
        for stream in streams:
            self.slices.append(slice(start, start + len(stream.prompt_ids)))
            start += len(stream.prompt_ids)

    def stream_logits(self, index: int) -> torch.Tensor:
        return self.logits[self.slices[index]]

    def advance(self, tokens: torch.Tensor) -> None:
        self.length += 1
        tokens = tokens.to(self.device).repeat(len(self.streams))[:, None]
        self.logits = self._forward(tokens, self.next_position)
        self.next_position = self.next_position + 1

    def _prefix_cache(self, prefixes: Sequence[Sequence[int]], width: int):
        """A cache holding each stream's prefix, computed once, right-aligned in every row of its stream."""
        from transformers import DynamicCache

        config = self.model.config
        if width == 0:
            return DynamicCache(config=config)
        layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        row = 0
        for stream, prefix in zip(self.streams, prefixes, strict=True):
            rows = slice(row, row + len(stream.prompt_ids))
            row = rows.stop
            if not prefix:
                continue
            ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
            cache = DynamicCache(config=config)
            names = None if self.adapter_names is None else self.adapter_names[rows.start : rows.start + 1]
            self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1, **_adapters(names))
            for index, layer in enumerate(cache.layers):
                if len(layers) <= index:
                    shape = (self.rows, layer.keys.shape[1], width, layer.keys.shape[3])
                    layers.append((layer.keys.new_zeros(shape), layer.values.new_zeros(shape)))
                keys, values = layers[index]
                keys[rows, :, width - len(prefix) :] = layer.keys
                values[rows, :, width - len(prefix) :] = layer.values
        return DynamicCache(layers, config=config)

    def _forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        output = self.model(
            input_ids=input_ids,
            attention_mask=self.mask[:, : self.length],
            position_ids=position_ids,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
            **_adapters(self.adapter_names),
        )
        return output.logits[:, -1, :]


def _adapter_names(model, streams: Sequence[Stream]) -> list[str] | None:
    """Per row, the PeftModel adapter that runs ("__base__": none), when any stream wants it off."""
    if not any(stream.adapter_disabled for stream in streams):
        return None
    active = model.active_adapter
    return [BASE_ADAPTER if stream.adapter_disabled else active for stream in streams for _ in stream.prompt_ids]


def _adapters(names: list[str] | None) -> dict[str, Any]:
    return {} if names is None else {"adapter_names": names}


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[index, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def _mix(parts: Sequence[tuple[_ModelBatch, int]], device) -> torch.Tensor:
    """Σ c_i·z_i over the streams, `parts` being each stream's (batch, index in it) in stream order."""
    # float32 whatever the model dtype: (1+α)·z − α·z' cancels large terms.
    (first, index), *rest = parts
    mixed = first.stream_logits(index).to(device, torch.float32) * first.streams[index].coefficient
    for batch, index in rest:
        mixed.add_(batch.stream_logits(index).to(device, torch.float32), alpha=batch.streams[index].coefficient)
    return mixed


def _sample(logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / sampling.temperature
    if 0 < sampling.top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, sampling.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, -math.inf)
    if sampling.top_p < 1:
        # Keep the smallest set of most likely tokens whose probability reaches top_p.
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probabilities = sorted_logits.softmax(dim=-1)
        mass_before = sorted_probabilities.cumsum(dim=-1) - sorted_probabilities
        drop_sorted = mass_before >= sampling.top_p
        drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, -math.inf)
    probabilities = logits.softmax(dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)


def _hit_stop_string(
    recent: torch.Tensor, finished: torch.Tensor, stop_strings: Sequence[str], tokenizer
) -> torch.Tensor:
    """Which unfinished rows now contain a stop string in their last few tokens."""
    hits = [
        not done and any(stop in tokenizer.decode(row, skip_special_tokens=True) for stop in stop_strings)
        for row, done in zip(recent.tolist(), finished.tolist(), strict=True)
    ]
    return torch.tensor(hits, dtype=torch.bool, device=finished.device)


def _cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    cut = min((index for stop in stop_strings if (index := text.find(stop)) >= 0), default=len(text))
    return text[:cut].strip()


def _check_logit_widths(batches: Sequence[_ModelBatch]) -> None:
    widths = [("+".join(stream.name for stream in batch.streams), batch.logits.shape[-1]) for batch in batches]
    if len({width for _, width in widths}) > 1:
        listed = ", ".join(f"{name} {width}" for name, width in widths)
        raise UserError(f"models disagree on the vocabulary size (logit widths: {listed})")


def _check_sampling(sampling: SamplingConfig) -> None:
    if sampling.max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1, got {sampling.max_new_tokens}")
    if sampling.temperature < 0:
        raise UserError(f"temperature must be >= 0, got {sampling.temperature}")
    if not 0 < sampling.top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {sampling.top_p}")
    if sampling.top_k < 0:
        raise UserError(f"top_k must be >= 0, got {sampling.top_k}")


def _eos_ids(streams: Sequence[Stream]) -> set[int]:
    """End-of-sequence ids from every tokenizer and model: chat models often add an end-of-turn id."""
    ids: set[int] = set()
    for stream in streams:
        generation_config = getattr(stream.model, "generation_config", None)
        for source in (stream.tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif source is not None:
                ids.update(source)
    return ids


def _pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


def _device(model) -> torch.device:
    return next(model.parameters()).device
