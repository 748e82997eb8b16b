"""Module discovery and hooked activation capture against direct single-text forward passes."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from builders import tiny_llama, word_tokenizer
from disalign.core.activations import (
    Positions,
    Site,
    capture,
    capture_sites,
    decoder_layers,
    down_projection,
    encode,
    mlp_matrices,
    mlp_modules,
    select_layers,
)
from disalign.errors import UserError

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<asst>"]
WORDS = "a b c d e f g h refuse".split()
TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['content'] }} {% endfor %}<asst>"
PROMPTS = ["<s> a b c <asst>", "<s> d <asst>", "<s> e f g h a b <asst>", "<s> h <asst>"]
RESPONSES = ["refuse", "a b c d e f", "", "g h"]


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(SPECIALS, WORDS, TEMPLATE, bos="<s>", eos="</s>", extra=["<asst>"])


@pytest.fixture(scope="module")
def llama(tokenizer):
    return tiny_llama(tokenizer, 0, layers=3).eval()


def gpt2(vocab: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=16, n_layer=2, n_head=2, n_positions=64)).eval()


def direct(model, tokenizer, modules, prompt: str, response: str, positions: Positions, read="output"):
    """Each module's full output for one unpadded text, averaged over the positions by hand."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] if response else []
    ids = torch.tensor([prompt_ids + response_ids])
    outputs = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, i=i: outputs.__setitem__(i, out))
        if read == "output"
        else module.register_forward_pre_hook(lambda _m, args, i=i: outputs.__setitem__(i, args[0]))
        for i, module in enumerate(modules)
    ]
    with torch.no_grad():
        model(input_ids=ids)
    for hook in hooks:
        hook.remove()
    p = len(prompt_ids)
    if positions.where == "prompt":
        chosen = list(range(max(0, p - positions.k), p))
    else:
        chosen = [p - 1 + j for j in range(min(positions.k, max(1, len(response_ids))))]
    return torch.stack([outputs[i][0, chosen].mean(0) for i in range(len(modules))])


@pytest.mark.parametrize("positions", [Positions("response", 3), Positions("response", 1), Positions("prompt", 2)])
def test_capture_matches_direct_passes(tokenizer, llama, positions):
    layers = decoder_layers(llama)
    batches = encode(tokenizer, PROMPTS, RESPONSES, batch_size=3)
    got = capture(llama, batches, layers, positions)
    assert got.shape == (len(PROMPTS), 3, 32)
    for row, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        expected = direct(llama, tokenizer, layers, prompt, response, positions)
        torch.testing.assert_close(got[row], expected, atol=1e-5, rtol=1e-4)
    assert all(not layer._forward_hooks for layer in layers)


def test_capture_reads_mlp_hidden_activations(tokenizer, llama):
    downs = [down_projection(mlp) for mlp in mlp_modules(llama)]
    got = capture(llama, encode(tokenizer, PROMPTS, RESPONSES), downs, Positions("response", 4), read="input")
    assert got.shape == (len(PROMPTS), 3, 64)
    for row, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        expected = direct(llama, tokenizer, downs, prompt, response, Positions("response", 4), read="input")
        torch.testing.assert_close(got[row], expected, atol=1e-5, rtol=1e-4)
    assert all(not down._forward_pre_hooks for down in downs)


def test_gpt2_and_peft_layouts(tokenizer, llama):
    from peft import LoraConfig, get_peft_model

    model = gpt2(len(tokenizer))
    assert decoder_layers(model) == list(model.transformer.h)
    assert mlp_modules(model) == [block.mlp for block in model.transformer.h]
    matrices = mlp_matrices(model.transformer.h[0].mlp)
    assert matrices["c_fc"].shape == (64, 16) and matrices["c_proj"].shape == (16, 64)
    acts = capture(model, encode(tokenizer, PROMPTS, RESPONSES), decoder_layers(model))
    assert acts.shape == (len(PROMPTS), 2, 16)

    wrapped = get_peft_model(tiny_llama(tokenizer, 0, layers=3), LoraConfig(r=2, target_modules=["q_proj"]))
    assert len(decoder_layers(wrapped)) == 3
    assert len(mlp_modules(wrapped)) == 3
    assert set(mlp_matrices(mlp_modules(llama)[0])) == {"gate_proj", "up_proj", "down_proj"}


def test_pattern_overrides_and_errors(tokenizer, llama):
    assert decoder_layers(llama, r"model\.layers\.[02]") == [llama.model.layers[0], llama.model.layers[2]]
    assert mlp_modules(llama, r"model\.layers\.1\.mlp") == [llama.model.layers[1].mlp]
    with pytest.raises(UserError, match="matches no module"):
        decoder_layers(llama, r"transformer\.h\.\d+")
    with pytest.raises(UserError, match="not a regular expression"):
        mlp_modules(llama, "model.layers.(")
    with pytest.raises(UserError, match="layer 3 out of range: the model has 3"):
        select_layers(decoder_layers(llama), [0, 3])
    assert select_layers(decoder_layers(llama), [-1]) == [2]
    with pytest.raises(UserError, match="2 prompts but 1 responses"):
        encode(tokenizer, PROMPTS[:2], RESPONSES[:1])
    with pytest.raises(UserError, match="no prompts"):
        encode(tokenizer, [])
    with pytest.raises(UserError, match="k must be at least 1"):
        Positions("response", 0)


def test_hooks_removed_after_error_and_widths_checked(tokenizer, llama):
    layers = decoder_layers(llama)
    mixed = [layers[0], down_projection(llama.model.layers[0].mlp)]
    with pytest.raises(UserError, match="width"):
        capture(llama, encode(tokenizer, PROMPTS), mixed, read="input")
    assert all(not module._forward_pre_hooks for module in mixed)
    unused = torch.nn.Linear(2, 2)
    with pytest.raises(UserError, match="never ran"):
        capture(llama, encode(tokenizer, PROMPTS), [layers[0], unused])
    assert not layers[0]._forward_hooks


def test_sites_share_one_pass_per_batch(tokenizer, llama):
    layers, downs = decoder_layers(llama), [down_projection(mlp) for mlp in mlp_modules(llama)]
    batches = encode(tokenizer, PROMPTS, RESPONSES, batch_size=2)
    calls = []
    counter = llama.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        both = capture_sites(llama, batches, {"mlp": Site(downs, "input"), "residual": Site(layers)})
    finally:
        counter.remove()
    assert len(calls) == len(batches) == 2
    torch.testing.assert_close(both["residual"], capture(llama, batches, layers))
    torch.testing.assert_close(both["mlp"], capture(llama, batches, downs, read="input"))


def test_embeds_replace_ids(tokenizer, llama):
    batch = encode(tokenizer, PROMPTS[:2], RESPONSES[:2])[0]
    embedded = type(batch)(**{**batch.__dict__, "embeds": llama.get_input_embeddings()(batch.ids)})
    layers = decoder_layers(llama)
    torch.testing.assert_close(capture(llama, [embedded], layers), capture(llama, [batch], layers))
