"""Emulated-disalignment decoding speed against plain `model.generate` on the same model size.

Each ED token costs one forward pass per model, so ED can reach at most half the tokens per
second of single-model generation; the goal is 0.45, i.e. little decode-loop overhead on top.

The templated case gives every prompt the same first tokens, as a chat template's system turn
does (`--prefix`, default 31: SmolLM2's template with the paper's malicious system prompt), and
compares ED with that prefix encoded once against every prompt encoded whole: tokens/s with ÷
without, and whether both sampled the same tokens. Prints readable lines, then one JSON object
on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from disalign.attacks.emulated import Contrast, Stream, contrast_decode
from disalign.core.generation import SamplingConfig

VOCAB = 8000
PROMPTS = 16
NEW_TOKENS = 64


def make_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    words = [f"w{i}" for i in range(VOCAB - len(specials))]
    vocab = {token: index for index, token in enumerate(specials + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def make_model(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def make_prompts(seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(16, 48, (PROMPTS,), generator=generator).tolist()
    return [[1, *torch.randint(4, VOCAB, (length - 1,), generator=generator).tolist()] for length in lengths]


def make_templated_prompts(seed: int, prefix_length: int) -> list[list[int]]:
    """One shared prefix (BOS, then `prefix_length` - 1 tokens), then 8 to 23 tokens of each prompt's own."""
    generator = torch.Generator().manual_seed(seed)
    prefix = [1, *torch.randint(4, VOCAB, (prefix_length - 1,), generator=generator).tolist()]
    lengths = torch.randint(8, 24, (PROMPTS,), generator=generator).tolist()
    return [prefix + torch.randint(4, VOCAB, (length,), generator=generator).tolist() for length in lengths]


def time_generate(model, prompts: list[list[int]]) -> float:
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    attention_mask = (input_ids != 0).long()
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            pad_token_id=0,
        )
    elapsed = time.perf_counter() - start
    assert output.shape[1] == width + NEW_TOKENS
    return elapsed


def time_ed(
    base, aligned, tokenizer, prompts: list[list[int]], share_prefix: bool = True
) -> tuple[float, torch.Tensor]:
    """(seconds, sampled ids) of one ED decode of every prompt."""
    ids = tuple(tuple(prompt) for prompt in prompts)
    contrast = Contrast(
        (
            Stream(base, tokenizer, ids, 1.3, name="base"),
            Stream(aligned, tokenizer, ids, -0.3, name="aligned"),
        )
    )
    sampling = SamplingConfig(max_new_tokens=NEW_TOKENS, temperature=1.0)
    start = time.perf_counter()
    decoded = contrast_decode(contrast, sampling, generator=torch.Generator().manual_seed(0), share_prefix=share_prefix)
    elapsed = time.perf_counter() - start
    assert decoded.token_ids.shape == (PROMPTS, NEW_TOKENS), "a batch finished early; timings not comparable"
    return elapsed, decoded.token_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # On a CPU shared with other jobs, one thread is steadier: two threads on two busy cores
    # spend most of their time waiting for each other.
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prefix", type=int, default=31, help="shared prefix tokens of the templated case")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = make_tokenizer()
    base, aligned = make_model(seed=0), make_model(seed=1)
    parameters = sum(p.numel() for p in base.parameters())
    prompts = make_prompts(seed=0)
    print(
        f"model: Llama {parameters / 1e6:.1f}M parameters, {PROMPTS} prompts x {NEW_TOKENS} new tokens, "
        f"{args.threads} threads"
    )

    time_generate(base, prompts)  # warm-up: first calls allocate and pick kernels
    time_ed(base, aligned, tokenizer, prompts)
    templated = make_templated_prompts(seed=1, prefix_length=args.prefix)
    generate_seconds, ed_seconds, shared_seconds, whole_seconds = [], [], [], []
    for _ in range(args.repeats):  # interleaved so that load from other users hits all alike
        generate_seconds.append(time_generate(base, prompts))
        ed_seconds.append(time_ed(base, aligned, tokenizer, prompts)[0])
        seconds, shared_ids = time_ed(base, aligned, tokenizer, templated)
        shared_seconds.append(seconds)
        seconds, whole_ids = time_ed(base, aligned, tokenizer, templated, share_prefix=False)
        whole_seconds.append(seconds)
    same_rows = sum(torch.equal(a, b) for a, b in zip(shared_ids, whole_ids, strict=True))
    prefix_gain = min(whole_seconds) / min(shared_seconds)

    tokens = PROMPTS * NEW_TOKENS
    # The fastest run is the one least disturbed by other jobs on the machine.
    generate_rate = tokens / min(generate_seconds)
    ed_rate = tokens / min(ed_seconds)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model.generate: {generate_rate:8.1f} tokens/s  (runs: {_seconds(generate_seconds)})")
    print(f"ED decode:      {ed_rate:8.1f} tokens/s  (runs: {_seconds(ed_seconds)})")
    print(
        f"ratio ED/generate: {ed_rate / generate_rate:.3f} "
        "(goal >= 0.45; 0.5 = two forward passes per token at equal loop overhead)"
    )
    print(
        f"templated prompts ({args.prefix}-token shared prefix): ED with it encoded once "
        f"{tokens / min(shared_seconds):.1f} tokens/s, whole prompts {tokens / min(whole_seconds):.1f}: "
        f"{prefix_gain:.3f}x; "
        f"same sampled tokens in {same_rows}/{PROMPTS} rows"
    )
    print(f"peak RSS: {peak_rss_mb:.0f} MB")
    print(
        json.dumps(
            {
                "ratio": round(ed_rate / generate_rate, 4),
                "ed_tokens_per_s": round(ed_rate, 1),
                "generate_tokens_per_s": round(generate_rate, 1),
                "peak_rss_mb": round(peak_rss_mb, 1),
                "parameters_m": round(parameters / 1e6, 2),
                "prompts": PROMPTS,
                "new_tokens": NEW_TOKENS,
                "threads": args.threads,
                "templated": {
                    "prefix_tokens": args.prefix,
                    "shared_prefix_tokens_per_s": round(tokens / min(shared_seconds), 1),
                    "whole_prompts_tokens_per_s": round(tokens / min(whole_seconds), 1),
                    "ratio": round(prefix_gain, 4),
                    "same_rows": same_rows,
                },
            }
        )
    )


def _seconds(runs: list[float]) -> str:
    return ", ".join(f"{seconds:.2f}s" for seconds in runs)


if __name__ == "__main__":
    main()
