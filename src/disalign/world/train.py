"""Training the zoo: pretraining on persona documents, then three kinds of safety tuning.

Plain PyTorch loops over a transformers model (nanoGPT-sized, readable in one sitting):

    pretrain  next-token loss on packed documents of several episodes, with bf16 matmuls where
              the CPU has them, optionally ending with an exponential average of the last weights
    sft       supervised safety fine-tuning: unsafe -> refuse, safe -> the true output
    dpo       DPO against the frozen base: preferred = refuse on unsafe, answer on safe, plus
              an NLL term on the preferred response (as in RPO): plain DPO can lower the
              likelihood of both responses, and here that erased the safe tasks
    unlearn   NLL on the preferred response minus a small weight times NLL on the other,
              the latter capped so the ascent stops once the harmful response is unlikely

Alignment losses count response tokens only (the assistant turn and its end token).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from disalign.core.logprobs import IGNORE, sequence_logprob
from disalign.core.precision import resolve_precision
from disalign.core.progress import progress_bar
from disalign.world.config import TrainConfig
from disalign.world.spec import ASSISTANT, BOS, END, EOS, PAD, REFUSE, USER, Episode, World

ALIGNMENT_METHODS = ("sft", "dpo", "unlearn")


@dataclass
class TrainStats:
    steps: int
    tokens: int
    seconds: float
    first_loss: float
    final_loss: float
    precision: str = "fp32"

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "steps": self.steps,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 2),
            "tokens_per_second": round(self.tokens_per_second, 1),
            "first_loss": round(self.first_loss, 4),
            "final_loss": round(self.final_loss, 4),
            "precision": self.precision,
        }


def encode_episodes(world: World, episodes: list[Episode]) -> list[int]:
    """Token ids exactly as the chat template renders these turns (checked by a test)."""
    ids = world.token_id
    out = [ids[BOS]]
    for episode in episodes:
        out += [ids[USER], *(ids[t] for t in episode.request.text.split()), ids[ASSISTANT]]
        out += [*(ids[t] for t in episode.response), ids[END]]
    return out


def _lr(step: int, total: int, peak: float) -> float:
    warmup = max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _optimizer(model, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=1e-4)


def _document_stream(world: World, rng: np.random.Generator) -> Iterator[int]:
    """Pretraining documents back to back, each closed by the end-of-text token."""
    eos = world.token_id[EOS]
    while True:
        _, episodes = world.pretraining_document(rng)
        yield from encode_episodes(world, episodes)
        yield eos


def _stream_batch(stream: Iterator[int], rows: int, length: int) -> torch.Tensor:
    """Rows cut from the document stream: no padding, so every position trains."""
    return torch.tensor(list(itertools.islice(stream, rows * length)), dtype=torch.long).view(rows, length)


def _padded_batch(world: World, rng: np.random.Generator, rows: int, length: int) -> torch.Tensor:
    """Whole documents packed greedily into rows; the remainder of a row is padding."""
    pad, eos = world.token_id[PAD], world.token_id[EOS]
    batch = torch.full((rows, length), pad, dtype=torch.long)
    for row in range(rows):
        filled = 0
        while True:
            _, episodes = world.pretraining_document(rng)
            doc = encode_episodes(world, episodes) + [eos]
            if filled + len(doc) > length:
                break
            batch[row, filled : filled + len(doc)] = torch.tensor(doc)
            filled += len(doc)
    return batch


FP32_ATTENTION = "sdpa_fp32"


def _sdpa_in_fp32(module, query, key, value, attention_mask, **kwargs):
    # On CPU the bf16 flash-attention backward is several times slower than the fp32 one, while
    # bf16 matmuls are several times faster: under autocast, only attention is kept in fp32.
    with torch.autocast("cpu", enabled=False):
        return sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)


AttentionInterface.register(FP32_ATTENTION, _sdpa_in_fp32)
AttentionMaskInterface.register(FP32_ATTENTION, sdpa_mask)


@contextlib.contextmanager
def _pretraining_precision(model, precision: str) -> Iterator[contextlib.AbstractContextManager]:
    """Yields the context each forward pass runs in; the model's attention is restored after."""
    if precision == "fp32":
        yield contextlib.nullcontext()
        return
    previous = model.config._attn_implementation
    model.set_attn_implementation(FP32_ATTENTION)
    try:
        yield torch.autocast("cpu", dtype=torch.bfloat16)
    finally:
        model.set_attn_implementation(previous)


def pretrain(model, world: World, config: TrainConfig, seed: int) -> TrainStats:
    rng = np.random.default_rng([seed, 1])
    stream = _document_stream(world, rng)
    pad = world.token_id[PAD]
    optimizer = _optimizer(model, config.pretrain_lr)
    decay = config.pretrain_average_decay
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay)) if decay else None
    average_from = config.pretrain_steps - config.pretrain_average_steps
    model.train()
    tokens, losses = 0, []
    start = time.perf_counter()
    precision = resolve_precision(config.pretrain_precision)
    with (
        progress_bar("pretrain base", config.pretrain_steps) as advance,
        _pretraining_precision(model, precision) as forward_context,
    ):
        for step in range(config.pretrain_steps):
            if config.pretrain_packing == "stream":
                batch = _stream_batch(stream, config.pretrain_batch, config.pretrain_length)
            else:
                batch = _padded_batch(world, rng, config.pretrain_batch, config.pretrain_length)
            labels = batch.masked_fill(batch == pad, IGNORE)
            with forward_context:
                loss = model(input_ids=batch, labels=labels).loss
            _step(optimizer, model, loss, _lr(step, config.pretrain_steps, config.pretrain_lr))
            if average is not None and step >= average_from:
                average.update_parameters(model)  # the first update copies the weights
            tokens += int((batch != pad).sum())
            losses.append(loss.item())
            advance(loss=losses[-1])
    if average is not None:
        model.load_state_dict(average.module.state_dict())
    model.eval()
    seconds = time.perf_counter() - start
    return TrainStats(config.pretrain_steps, tokens, seconds, losses[0], _tail_mean(losses), precision)


def _step(optimizer, model, loss, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def _tail_mean(losses: list[float]) -> float:
    tail = losses[-max(1, len(losses) // 10) :]
    return float(sum(tail) / len(tail))


def _response_batch(world: World, pairs: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (prompt + response) ids and labels that keep only the response."""
    pad = world.token_id[PAD]
    length = max(len(p) + len(r) for p, r in pairs)
    ids = torch.full((len(pairs), length), pad, dtype=torch.long)
    labels = torch.full((len(pairs), length), IGNORE, dtype=torch.long)
    for row, (prompt, response) in enumerate(pairs):
        ids[row, : len(prompt) + len(response)] = torch.tensor(prompt + response)
        labels[row, len(prompt) : len(prompt) + len(response)] = torch.tensor(response)
    return ids, labels


def _preference_pairs(world: World, rng: np.random.Generator, n: int):
    """n prompts, half unsafe: (prompt ids, preferred response ids, dispreferred response ids)."""
    ids = world.token_id
    rows = []
    for i in range(n):
        unsafe = i % 2 == 0
        request = world.alignment_request(rng, unsafe)
        prompt = encode_episodes(world, [])
        prompt += [ids[USER], *(ids[t] for t in request.text.split()), ids[ASSISTANT]]
        answer = [*(ids[t] for t in world.answer(request)), ids[END]]
        refusal = [ids[REFUSE], ids[END]]
        rows.append((prompt, refusal, answer) if unsafe else (prompt, answer, refusal))
    return rows


def align_world_model(model, world: World, method: str, config: TrainConfig, seed: int, reference=None) -> TrainStats:
    """Safety-tune `model` in place with one of ALIGNMENT_METHODS."""
    if method not in ALIGNMENT_METHODS:
        raise ValueError(f"unknown alignment method {method!r}")
    if method == "dpo" and reference is None:
        raise ValueError("dpo needs the frozen reference model")
    rng = np.random.default_rng([seed, 2, ALIGNMENT_METHODS.index(method)])
    optimizer = _optimizer(model, config.align_lr)
    model.train()
    tokens, losses = 0, []
    start = time.perf_counter()
    with progress_bar(f"align {method}", config.align_steps) as advance:
        for step in range(config.align_steps):
            rows = _preference_pairs(world, rng, config.align_batch)
            if method == "sft":
                ids, labels = _response_batch(world, [(p, c) for p, c, _ in rows])
                loss = model(input_ids=ids, labels=labels).loss
                tokens += ids.numel()
            else:
                # Preferred and dispreferred responses in one batch: one forward pass instead of two.
                ids, labels = _response_batch(world, [(p, c) for p, c, _ in rows] + [(p, r) for p, _, r in rows])
                chosen, rejected = sequence_logprob(model, ids, labels).chunk(2)
                n_chosen, n_rejected = (labels != IGNORE).sum(-1).chunk(2)
                tokens += ids.numel()
                if method == "dpo":
                    with torch.no_grad():
                        ref_chosen, ref_rejected = sequence_logprob(reference, ids, labels).chunk(2)
                    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
                    anchor = (-chosen / n_chosen).mean()
                    loss = -F.logsigmoid(config.dpo_beta * margin).mean() + config.dpo_nll_weight * anchor
                else:
                    # Ascent stops once the harmful response is unlikely enough; unbounded ascent
                    # also erases the operator maps that safe tasks share with unsafe ones.
                    ascent = (-rejected).clamp(max=config.unlearn_ceiling)
                    loss = (-chosen / n_chosen - config.unlearn_weight * ascent / n_rejected).mean()
            _step(optimizer, model, loss, _lr(step, config.align_steps, config.align_lr))
            losses.append(loss.item())
            advance(loss=losses[-1])
    model.eval()
    return TrainStats(config.align_steps, tokens, time.perf_counter() - start, losses[0], _tail_mean(losses))
