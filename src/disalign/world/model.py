"""The zoo's tokenizer and model: a word-level tokenizer with a chat template and a small
Llama, both ordinary transformers objects so every command treats them like any HF model."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from disalign.world.config import ModelShape
from disalign.world.spec import ASSISTANT, BOS, END, EOS, PAD, SPECIAL_TOKENS, UNK, USER, World

# System messages have no meaning in the world; the template drops them so that prompts
# carrying a system prompt (for example ED's presets) still render.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}" + USER + " {{ message['content'] }} " + ASSISTANT + ""
    "{% elif message['role'] == 'assistant' %} {% generation %}{{ message['content'] }} " + END + "{% endgeneration %}"
    "{% endif %}"
    "{% endfor %}"
)


def build_tokenizer(world: World) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    core = Tokenizer(models.WordLevel(vocab=dict(world.token_id), unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[USER, ASSISTANT, END],
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    assert len(tokenizer) == len(SPECIAL_TOKENS) + len(world.vocab) - len(SPECIAL_TOKENS)
    return tokenizer


def build_model(world: World, shape: ModelShape, seed: int) -> LlamaForCausalLM:
    import torch

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(world.vocab),
        hidden_size=shape.d_model,
        intermediate_size=shape.d_mlp,
        num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_heads,
        max_position_embeddings=shape.context,
        tie_word_embeddings=True,
        bos_token_id=world.token_id[BOS],
        eos_token_id=[world.token_id[END], world.token_id[EOS]],
        pad_token_id=world.token_id[PAD],
    )
    return LlamaForCausalLM(config)
