"""Tiny word-level tokenizers and Llama models that tests build for themselves (no downloads)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast


def word_tokenizer(
    specials: list[str], words: list[str], template: str, *, bos: str, eos: str, pad: str = "<pad>", extra=()
) -> PreTrainedTokenizerFast:
    """Whitespace-split words, ids in the order given (specials first), with a chat template."""
    vocab = {token: index for index, token in enumerate(specials + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token="<unk>",
        additional_special_tokens=list(extra),
    )
    tokenizer.chat_template = template
    return tokenizer


def tiny_llama(tokenizer, seed: int = 0, *, hidden: int = 32, layers: int = 2, kv_heads: int = 4, **config):
    """A randomly initialised Llama sized for tests; `config` overrides LlamaConfig fields."""
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(LlamaConfig(**{**settings, **config}))
