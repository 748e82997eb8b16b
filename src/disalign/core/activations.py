"""Where a causal LM's residual blocks and MLPs are, and what they compute on a set of texts.

Analyses that look inside a model (activation clusters, weight changes, refusal directions)
read it through these functions:

    layers = decoder_layers(model)                      # one residual block per layer
    batches = encode(tokenizer, prompts, responses)     # token rows, prompt/response boundary known
    acts = capture(model, batches, layers, Positions("response", 10))   # (n_texts, n_layers, d)
    both = capture_sites(model, batches, {"mlp": Site(downs, "input"), "residual": Site(layers)})

Position convention, shared with the per-position KL of `core.logprobs`: response position j
is the position whose next-token distribution produces response token j, so position 0 is the
last prompt token (the assistant marker of a chat template) and needs no response text at all.
`Positions("prompt", k)` is the last k prompt tokens instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from disalign.errors import UserError

# Where transformers keeps the residual blocks: Llama/Mistral/Qwen/Gemma (`model.layers`),
# GPT-2/GPT-J/Bloom (`transformer.h`), GPT-NeoX (`gpt_neox.layers`), OPT (`decoder.layers`).
_BLOCK_LIST_NAMES = ("layers", "h", "blocks")
# The MLP's last matrix, whose input is the post-activation hidden vector (GPT-2's post-GELU `c_fc`
# output, Llama's act(gate)·up) and whose ΔW the null-space analysis reads.
_DOWN_PROJECTIONS = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "fc_out", "w2")


def _named_modules(model: nn.Module, pattern: str) -> list[tuple[str, nn.Module]]:
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise UserError(f"module pattern {pattern!r} is not a regular expression ({err})") from None
    found = [(name, module) for name, module in model.named_modules() if name and regex.fullmatch(name)]
    if not found:
        raise UserError(f"module pattern {pattern!r} matches no module of {type(model).__name__}")
    return found


def decoder_layers(model: nn.Module, pattern: str | None = None) -> list[nn.Module]:
    """The model's residual blocks in order; `pattern` (a regex fully matching module names) overrides.

    Found through PEFT wrappers too: the blocks are the first ModuleList named layers/h/blocks
    holding `config.num_hidden_layers` modules (any length when the config does not say).
    """
    if pattern is not None:
        return [module for _, module in _named_modules(model, pattern)]
    config = getattr(model, "config", None)
    expected = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and name.rsplit(".", 1)[-1] in _BLOCK_LIST_NAMES
            and len(module) > 0
            and (expected is None or len(module) == expected)
        ):
            return list(module)
    raise UserError(
        f"{type(model).__name__}: cannot find its decoder layers (no layers/h/blocks list); "
        "give a module pattern such as 'model\\.layers\\.\\d+'"
    )


def mlp_modules(model: nn.Module, pattern: str | None = None) -> list[nn.Module]:
    """Each decoder layer's MLP (`.mlp`); `pattern` (a regex fully matching module names) overrides."""
    if pattern is not None:
        return [module for _, module in _named_modules(model, pattern)]
    layers = decoder_layers(model)
    missing = [index for index, layer in enumerate(layers) if not isinstance(getattr(layer, "mlp", None), nn.Module)]
    if missing:
        raise UserError(f"{type(model).__name__}: decoder layer {missing[0]} has no `.mlp`; give an MLP module pattern")
    return [layer.mlp for layer in layers]


def down_projection(mlp: nn.Module) -> nn.Module:
    """The MLP's output matrix (down_proj, c_proj, fc2, ...): its input is the MLP's hidden activation."""
    for name in _DOWN_PROJECTIONS:
        child = getattr(mlp, name, None)
        if isinstance(child, nn.Module):
            return child
    raise UserError(f"{type(mlp).__name__}: no output projection ({', '.join(_DOWN_PROJECTIONS)}) in this MLP")


def mlp_matrices(mlp: nn.Module) -> dict[str, torch.Tensor]:
    """The MLP's weight matrices by child name, each as (out_features, in_features).

    GPT-2's Conv1D stores (in, out); it is transposed so that every matrix maps inputs the same way.
    """
    matrices = {}
    for name, child in mlp.named_children():
        weight = getattr(child, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            continue
        transposed = type(child).__name__ == "Conv1D"
        matrices[name] = (weight.T if transposed else weight).detach()
    if not matrices:
        raise UserError(f"{type(mlp).__name__}: no weight matrices in this MLP")
    return matrices


def select_layers(modules: Sequence[nn.Module], layers: Sequence[int] | None, what: str = "layer") -> list[int]:
    """Validated layer indices (negative ones count from the end); all when `layers` is None."""
    if layers is None:
        return list(range(len(modules)))
    chosen = []
    for index in layers:
        if not -len(modules) <= index < len(modules):
            raise UserError(f"{what} {index} out of range: the model has {len(modules)} (0..{len(modules) - 1})")
        chosen.append(index % len(modules))
    return chosen


@dataclass(frozen=True)
class Positions:
    """Which positions of each row to average: the first `k` response positions (position 0 is the
    last prompt token) or the last `k` prompt tokens. Rows shorter than that average what they have."""

    where: Literal["response", "prompt"] = "response"
    k: int = 10

    def __post_init__(self):
        if self.where not in ("response", "prompt"):
            raise UserError(f"positions: where must be 'response' or 'prompt', not {self.where!r}")
        if self.k < 1:
            raise UserError(f"positions: k must be at least 1, not {self.k}")

    def weights(self, batch: TokenBatch) -> torch.Tensor:
        """(rows, length) weights, each row summing to 1 over its chosen positions."""
        index = torch.arange(batch.ids.shape[1]).unsqueeze(0)
        prompt_end = batch.prompt_lengths.unsqueeze(1)
        if self.where == "prompt":
            chosen = (index < prompt_end) & (index >= prompt_end - self.k)
        else:
            response_tokens = (batch.lengths - batch.prompt_lengths).clamp(min=1).unsqueeze(1)
            offset = index - (prompt_end - 1)
            chosen = (offset >= 0) & (offset < torch.minimum(response_tokens, torch.tensor(self.k)))
        chosen = chosen.float()
        return chosen / chosen.sum(1, keepdim=True)


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded token rows: prompt tokens then response tokens. `rows` are the rows' indices
    in the caller's order (encoding sorts by length to pad less)."""

    ids: torch.Tensor  # (b, length)
    attention_mask: torch.Tensor  # (b, length)
    prompt_lengths: torch.Tensor  # (b,)
    lengths: torch.Tensor  # (b,)
    rows: torch.Tensor  # (b,)
    embeds: torch.Tensor | None = None  # (b, length, d): fed instead of `ids` (soft tokens, perturbed inputs)


def encode(
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str] | None = None,
    *,
    batch_size: int = 32,
    max_length: int | None = None,
) -> list[TokenBatch]:
    """Tokenise already-rendered prompts (and, optionally, the responses that follow them) into
    batches of similar length. Special tokens are not added: the chat template already has them.
    `max_length` cuts responses (never prompts) so that a row fits the model's context."""
    if not prompts:
        raise UserError("no prompts to encode")
    if responses is not None and len(responses) != len(prompts):
        raise UserError(f"{len(prompts)} prompts but {len(responses)} responses")
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, not {batch_size}")
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    response_ids = (
        tokenizer(list(responses), add_special_tokens=False)["input_ids"]
        if responses is not None
        else [[] for _ in prompts]
    )
    rows = []
    for index, (prompt, response) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        if not prompt:
            raise UserError(f"prompt {index} is empty after tokenisation")
        if max_length is not None:
            if len(prompt) > max_length:
                raise UserError(f"prompt {index} has {len(prompt)} tokens, more than the model's {max_length}")
            response = response[: max_length - len(prompt)]
        rows.append((index, prompt, response))
    rows.sort(key=lambda row: len(row[1]) + len(row[2]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        sequences = [prompt + response for _, prompt, response in chunk]
        ids, mask = right_padded(sequences, pad)
        batches.append(
            TokenBatch(
                ids=ids,
                attention_mask=mask,
                prompt_lengths=torch.tensor([len(prompt) for _, prompt, _ in chunk]),
                lengths=torch.tensor([len(sequence) for sequence in sequences]),
                rows=torch.tensor([index for index, _, _ in chunk]),
            )
        )
    return batches


def right_padded(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sequences as one batch: ids padded on the right with `pad_id`, and the attention mask."""
    width = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
    return ids, mask


class _Done(Exception):
    """Raised by the last hook of a pass: nothing after the captured modules is needed."""


@contextmanager
def hooked(modules: Sequence[nn.Module], hook, *, read: Literal["output", "input"] = "output"):
    """`hook(index, tensor)` called with each module's output (or first input) while inside; hooks
    are removed on leaving, also on error."""
    handles = []
    try:
        for index, module in enumerate(modules):
            if read == "output":
                handles.append(module.register_forward_hook(lambda _m, _i, out, i=index: hook(i, _first(out))))
            elif read == "input":
                handles.append(module.register_forward_pre_hook(lambda _m, args, i=index: hook(i, _first(args))))
            else:
                raise UserError(f"read must be 'output' or 'input', not {read!r}")
        yield
    finally:
        for handle in handles:
            handle.remove()


def _first(value) -> torch.Tensor:
    return value[0] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Site:
    """Modules of one kind (say each layer's residual output) read the same way, all of one width."""

    modules: Sequence[nn.Module]
    read: Literal["output", "input"] = "output"


def capture(
    model: nn.Module,
    batches: Iterable[TokenBatch],
    modules: Sequence[nn.Module],
    positions: Positions = Positions(),
    *,
    read: Literal["output", "input"] = "output",
) -> torch.Tensor:
    """(n_texts, n_modules, d) float32: each module's output (or first input) averaged over
    `positions`, rows in the order the texts were given to `encode`. All modules must have one width."""
    return capture_sites(model, batches, {"modules": Site(modules, read)}, positions)["modules"]


@torch.inference_mode()
def capture_sites(
    model: nn.Module, batches: Iterable[TokenBatch], sites: dict[str, Site], positions: Positions = Positions()
) -> dict[str, torch.Tensor]:
    """`capture` for several sites at once (say MLP hidden activations and the residual stream):
    {site: (n_texts, n_modules, d_site)}, one forward pass per batch for all of them.

    The pass stops once every module has been read, so the layers after the last captured one and
    the LM head are not computed. A batch with `embeds` is fed as `inputs_embeds`.
    """
    if not sites or not all(site.modules for site in sites.values()):
        raise UserError("no modules to capture")
    batches = list(batches)
    n_texts = sum(len(batch.rows) for batch in batches)
    results: dict[str, torch.Tensor] = {}
    seen: set[tuple[str, int]] = set()
    total = sum(len(site.modules) for site in sites.values())
    current: dict[str, torch.Tensor] = {}

    def record(name: str, index: int, hidden: torch.Tensor) -> None:
        if hidden.dim() != 3:
            raise UserError(f"{name} module {index} gives a {hidden.dim()}-d tensor, not (batch, length, width)")
        if name not in results:
            results[name] = torch.zeros((n_texts, len(sites[name].modules), hidden.shape[-1]))
        if hidden.shape[-1] != results[name].shape[-1]:
            raise UserError(
                f"{name} module {index} has width {hidden.shape[-1]}, module 0 has {results[name].shape[-1]}"
            )
        reduced = torch.einsum("bl,bld->bd", current["weights"].to(hidden), hidden)
        results[name][current["rows"], index] = reduced.float().cpu()
        seen.add((name, index))
        if len(seen) == total:
            raise _Done

    device = next(model.parameters()).device
    with ExitStack() as stack:
        for name, site in sites.items():
            stack.enter_context(hooked(site.modules, lambda i, h, name=name: record(name, i, h), read=site.read))
        for batch in batches:
            seen.clear()
            current.update(weights=positions.weights(batch).to(device), rows=batch.rows)
            inputs = (
                {"inputs_embeds": batch.embeds.to(device)}
                if batch.embeds is not None
                else {"input_ids": batch.ids.to(device)}
            )
            try:
                model(**inputs, attention_mask=batch.attention_mask.to(device), use_cache=False)
            except _Done:
                continue
            raise UserError(f"{total - len(seen)} of the modules to capture never ran in the forward pass")
    return results
