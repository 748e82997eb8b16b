"""Three ways to act on a refusal direction r (unit vector in the residual stream):

    ablation_hooks      at inference, remove w_l·(x·r)·r from every write into the residual
                        stream (embeddings, each layer's attention and MLP output projections)
    activation_addition at inference, add c·r to the residual stream entering one layer
    orthogonalise       the same removal made permanent in the weights: W ← W − w_l·r·rᵀ·W for
                        every matrix that writes to the residual stream, saved as a normal model

With all weights 1 the residual stream never holds any r component, which is Arditi et al.'s
directional ablation; per-layer weights w_l scale the removal at layer l (the embeddings take
w_0). The hooks act on exactly the modules whose weights `orthogonalise` edits, so the two give
the same logits.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from disalign.core.activations import decoder_layers, down_projection, select_layers
from disalign.errors import UserError

_ATTENTIONS = ("self_attn", "attn", "attention", "self_attention")
_ATTENTION_OUTPUTS = ("o_proj", "c_proj", "out_proj", "dense")
# Norms applied to a block's output before it joins the residual stream (Gemma 2/3): removing r
# before such a norm does not keep it out of the stream.
_POST_NORMS = ("post_feedforward_layernorm", "post_attention_norm", "post_mlp_layernorm")


@dataclass(frozen=True)
class Writer:
    """A module whose output is added to the residual stream, and the layer whose weight it takes."""

    module: nn.Module
    layer: int


def residual_writers(model: nn.Module) -> list[Writer]:
    """The embeddings (token and, where present, position) and each layer's attention and MLP output projections."""
    layers = decoder_layers(model)
    writers = []
    for index, layer in enumerate(layers):
        if any(hasattr(layer, name) for name in _POST_NORMS):
            raise UserError(
                f"{type(model).__name__}: block outputs pass through a norm before the residual stream; "
                "directional ablation supports pre-norm architectures (Llama, Mistral, Qwen, GPT-2)"
            )
        attention = _child(layer, _ATTENTIONS, f"decoder layer {index} has no attention module")
        mlp = _child(layer, ("mlp",), f"decoder layer {index} has no `.mlp`")
        writers.append(Writer(_child(attention, _ATTENTION_OUTPUTS, f"layer {index}: no attention output"), index))
        writers.append(Writer(down_projection(mlp), index))
    width = _output_width(writers[0].module)
    embeddings = [
        module
        for module in model.modules()
        if isinstance(module, nn.Embedding) and module.embedding_dim == width and _writes_stream(model, module, layers)
    ]
    if not embeddings:
        raise UserError(f"{type(model).__name__}: no embedding of width {width} writes to the residual stream")
    return [Writer(module, 0) for module in embeddings] + writers


def layer_weights(model: nn.Module, weights: Sequence[float] | None) -> list[float]:
    """Per-layer removal weights, validated; all ones when None."""
    n_layers = len(decoder_layers(model))
    if weights is None:
        return [1.0] * n_layers
    if len(weights) != n_layers:
        raise UserError(f"ablation weights: {len(weights)} given, the model has {n_layers} layers")
    return [float(w) for w in weights]


@contextmanager
def ablation_hooks(model: nn.Module, direction: torch.Tensor, weights: Sequence[float] | None = None) -> Iterator[None]:
    """Inside, every write into the residual stream has w_l·(x·r)·r removed."""
    writers = residual_writers(model)
    unit = _unit(direction, writers)
    scale = layer_weights(model, weights)
    handles = []

    def remove(writer: Writer):
        def hook(_module, _inputs, output):
            r = unit.to(output)
            return output - scale[writer.layer] * (output @ r).unsqueeze(-1) * r

        return hook

    try:
        for writer in writers:
            handles.append(writer.module.register_forward_hook(remove(writer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def activation_addition(model: nn.Module, direction: torch.Tensor, layer: int, coefficient: float) -> Iterator[None]:
    """Inside, `coefficient`·r is added to the residual stream entering decoder layer `layer`, at every
    position (negative coefficients subtract refusal, positive ones induce it)."""
    layers = decoder_layers(model)
    (index,) = select_layers(layers, [layer])
    unit = _unit(direction, residual_writers(model))

    def add(_module, args, kwargs):
        if args:
            return (args[0] + coefficient * unit.to(args[0]), *args[1:]), kwargs
        hidden = kwargs["hidden_states"]
        return args, {**kwargs, "hidden_states": hidden + coefficient * unit.to(hidden)}

    handle = layers[index].register_forward_pre_hook(add, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def orthogonalise(model: nn.Module, direction: torch.Tensor, weights: Sequence[float] | None = None) -> nn.Module:
    """Edit `model` in place so that no matrix writes along r (scaled per layer); returns it.

    Tied input and output embeddings are untied first: the unembedding reads the stream, it does not
    write to it, and must stay as it was."""
    writers = residual_writers(model)
    unit = _unit(direction, writers)
    scale = layer_weights(model, weights)
    untie_output_embeddings(model)
    for writer in writers:
        w = scale[writer.layer]
        module = writer.module
        r = unit.to(module.weight)
        if isinstance(module, nn.Embedding) or type(module).__name__ == "Conv1D":  # rows live in the stream
            module.weight -= w * torch.outer(module.weight @ r, r)
        else:  # nn.Linear: (out = stream, in)
            module.weight -= w * torch.outer(r, r @ module.weight)
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias -= w * (bias @ r) * r
    return model


def save_model(model: nn.Module, tokenizer, out: str | Path) -> Path:
    """A normal model directory (safetensors + tokenizer) that every verb's model loader reads."""
    out = Path(out)
    if out.exists():
        raise UserError(f"{out}: already exists; choose another output or remove it")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    partial.rename(out)
    return out


def untie_output_embeddings(model: nn.Module) -> None:
    """The unembedding as a weight of its own (a copy of the input embedding) where the two were one."""
    output, inputs = model.get_output_embeddings(), model.get_input_embeddings()
    if output is None or output.weight is not inputs.weight:
        return
    output.weight = nn.Parameter(inputs.weight.detach().clone())
    model.config.tie_word_embeddings = False
    text_config = getattr(model.config, "get_text_config", lambda: None)()
    if text_config is not None:
        text_config.tie_word_embeddings = False


def _unit(direction: torch.Tensor, writers: Sequence[Writer]) -> torch.Tensor:
    direction = torch.as_tensor(direction, dtype=torch.float32).flatten()
    width = _output_width(writers[-1].module)
    if direction.numel() != width:
        raise UserError(f"direction has {direction.numel()} components, the residual stream has {width}")
    norm = direction.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise UserError("direction is zero or not finite")
    return direction / norm


def _child(module: nn.Module, names: Sequence[str], missing: str) -> nn.Module:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Module):
            return child
    raise UserError(f"{missing} (looked for {', '.join(names)})")


def _output_width(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if type(module).__name__ == "Conv1D":
        return module.weight.shape[1]
    return module.weight.shape[-1]


def _writes_stream(model: nn.Module, module: nn.Module, layers: list[nn.Module]) -> bool:
    """An embedding outside the decoder layers that is not the (tied) unembedding."""
    inside_layers = {id(m) for layer in layers for m in layer.modules()}
    return id(module) not in inside_layers and module is not model.get_output_embeddings()
