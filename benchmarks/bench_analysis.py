"""Speed of the mechanistic analysis.

1. Capture on a 23M-parameter Llama, 512 prompts: texts per second when reading every layer's MLP
   hidden activation and residual output (hooks, one pass per batch) against a plain forward pass
   over the same batches (goal: ratio >= 0.8; capture stops after the last layer, so it skips the
   LM head: the ratio to the decoder body alone shows the cost of the hooks), and the seconds of a
   whole cluster analysis (τ, separation and a cross-validated probe per layer and site) on them.
2. With --zoo DIR: the seconds of `analyze clusters`, `weights`, `depth` and `attack` on a world zoo, each
   aligned model against the base.

Prints readable lines, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from disalign.analyses.mechanism import activation_sites, analyze_clusters
from disalign.core.activations import Positions, capture_sites, encode
from disalign.data import PromptRecord

VOCAB = 8000
PROMPTS = 512
BATCH = 32


def make_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    words = [f"w{i}" for i in range(VOCAB - len(specials))]
    core = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(specials + words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }} {% endfor %}"
    return tokenizer


def make_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
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


def make_records(n: int, seed: int, kind: str) -> list[PromptRecord]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(16, 48, (n,), generator=generator).tolist()
    return [
        PromptRecord(
            id=f"{kind}{i}",
            prompt=" ".join(f"w{t}" for t in torch.randint(0, VOCAB - 4, (length,), generator=generator).tolist()),
            category=kind,
            source="bench",
        )
        for i, length in enumerate(lengths)
    ]


def time_capture(model, tokenizer, prompts: list[str]) -> tuple[float, float, float]:
    """Seconds of a plain forward pass, of the decoder body alone (no LM head), and of capture,
    over the same batches."""
    batches = encode(tokenizer, prompts, batch_size=BATCH)
    sites = activation_sites(model)
    seconds = []
    for module in (model, model.base_model):
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                module(input_ids=batch.ids, attention_mask=batch.attention_mask, use_cache=False)
        seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    acts = capture_sites(model, batches, sites, Positions("response", 1))
    seconds.append(time.perf_counter() - start)
    assert acts["mlp"].shape == (len(prompts), 6, 1376) and acts["residual"].shape == (len(prompts), 6, 512)
    return tuple(seconds)


def bench_capture(threads: int, repeats: int) -> dict:
    tokenizer, model = make_tokenizer(), make_model()
    parameters = sum(p.numel() for p in model.parameters())
    records = make_records(PROMPTS, 0, "any")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": r.prompt}], tokenize=False) for r in records]
    time_capture(model, tokenizer, prompts[:64])  # warm-up
    runs = [time_capture(model, tokenizer, prompts) for _ in range(repeats)]  # interleaved: load hits both alike
    # The fastest run is the one least disturbed by other jobs on the machine.
    forward_rate, body_rate, capture_rate = (PROMPTS / min(run[i] for run in runs) for i in range(3))
    print(
        f"Llama {parameters / 1e6:.1f}M, {PROMPTS} prompts, {threads} threads: forward {forward_rate:.0f} texts/s, "
        f"body without LM head {body_rate:.0f}, capture (12 modules, 2 sites) {capture_rate:.0f}: "
        f"ratio {capture_rate / forward_rate:.2f} to forward (goal >= 0.8), {capture_rate / body_rate:.2f} to the body"
    )
    sets = {"safe": make_records(PROMPTS // 2, 1, "safe"), "unsafe": make_records(PROMPTS // 2, 2, "unsafe")}
    reference = {"safe": make_records(64, 3, "safe"), "unsafe": make_records(64, 4, "unsafe")}
    start = time.perf_counter()
    analyze_clusters(model, tokenizer, sets, reference, batch_size=BATCH)
    clusters_seconds = time.perf_counter() - start
    print(f"clusters on {PROMPTS} prompts (+128 reference), decision position: {clusters_seconds:.1f} s")
    return {
        "parameters_m": round(parameters / 1e6, 2),
        "prompts": PROMPTS,
        "forward_texts_per_s": round(forward_rate, 1),
        "capture_texts_per_s": round(capture_rate, 1),
        "body_texts_per_s": round(body_rate, 1),
        "capture_ratio": round(capture_rate / forward_rate, 3),
        "capture_ratio_to_body": round(capture_rate / body_rate, 3),
        "clusters_seconds": round(clusters_seconds, 2),
    }


def bench_zoo(zoo: Path) -> dict:
    import disalign

    seconds, cpu_seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for analysis in ("clusters", "weights", "depth", "attack"):
            start, cpu_start = time.perf_counter(), time.process_time()
            getattr(disalign.analyze, analysis)(world=zoo, out=Path(tmp) / analysis)
            seconds[analysis] = round(time.perf_counter() - start, 1)
            # CPU seconds of this process: on a machine shared with other jobs, steadier than wall time.
            cpu_seconds[analysis] = round(time.process_time() - cpu_start, 1)
            print(f"analyze {analysis} on {zoo}: {seconds[analysis]} s ({cpu_seconds[analysis]} CPU s)")
    return {
        "zoo": str(zoo),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "total_seconds": round(sum(seconds.values()), 1),
        "total_cpu_seconds": round(sum(cpu_seconds.values()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--zoo", type=Path, help="also time the analysis verbs on this world zoo")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "capture": bench_capture(args.threads, args.repeats)}
    if args.zoo is not None:
        result["zoo"] = bench_zoo(args.zoo)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
