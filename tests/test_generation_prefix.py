"""generate: the prompts' shared prefix (a chat template's system turn) is encoded once, same outputs."""

from __future__ import annotations

import torch

from builders import tiny_llama, word_tokenizer
from disalign.core.generation import SamplingConfig, generate, shared_prefix

WORDS = "user: assistant: system: be nice hello world how do i make cake bread the cat sat on mat".split()
TEMPLATE = (
    "{{ bos_token }}system: be nice {% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}assistant:"
)
QUERIES = ["hello", "how do i make cake", "the cat sat on mat mat", "bread"]


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == (1, 2, 3)
    assert shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == (1, 2)
    assert shared_prefix([[1, 2, 3]]) == ()
    assert shared_prefix([[1, 2], [3, 2]]) == ()


def test_generate_encodes_the_shared_prefix_once_and_answers_as_whole_prompts_do():
    tokenizer = word_tokenizer(["<pad>", "<s>", "</s>", "<unk>"], WORDS, TEMPLATE, bos="<s>", eos="</s>")
    model = tiny_llama(tokenizer, hidden=64).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # sharper logits: greedy ties would make the comparison weak
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False) for q in QUERIES]
    rows = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    prefix = len(shared_prefix(rows))
    assert prefix == 5  # <s> system: be nice user:

    tokenizer.padding_side = "left"
    whole = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        expected = model.generate(**whole, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    expected_texts = tokenizer.batch_decode(expected[:, whole["input_ids"].shape[1] :], skip_special_tokens=True)

    widths = []
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    texts = generate(model, tokenizer, prompts, SamplingConfig(max_new_tokens=6, temperature=0, precision="fp32"))
    hook.remove()
    assert texts == [text.strip() for text in expected_texts]
    longest = max(len(row) for row in rows)
    assert widths[:2] == [(1, prefix), (len(QUERIES), longest - prefix)]
