"""Speed of refusal-direction ablation on a 23M-parameter Llama.

1. Direction extraction: difference of means at every layer and post-instruction position over
   128 harmful and 128 harmless prompts (one capture pass per position and set).
2. One full search: Optuna trials, each generating 16 greedy tokens for 32 held-out harmful
   prompts under the ablation hooks, judging them, the first-token KL on 32 harmless prompts and
   (with --degeneration) 16 greedy tokens for those, scored for degeneration; seconds and trials
   per minute.
3. The edit (the chosen one, or the first trial's where none is within budget): orthogonalising
   the weights and saving the model; the damage measure on 32 prompts.

The model is random, so the figures are speed only. Prints readable lines, then one JSON object
on the last line.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from disalign.attacks.ablation import Objectives, orthogonalise, refusal_directions, save_model, search
from disalign.core.damage import DamageMeter
from disalign.data import PromptRecord
from disalign.judges import get_judge

VOCAB = 8000


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
    # A user marker before the request and a three-token assistant header after it, as chat templates have.
    tokenizer.chat_template = "{{ bos_token }}{% for m in messages %}w0 {{ m['content'] }} w1 w2 w3 {% endfor %}"
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
    lengths = torch.randint(8, 32, (n,), generator=generator).tolist()
    return [
        PromptRecord(
            id=f"{kind}{i}",
            prompt=" ".join(f"w{t}" for t in torch.randint(10, VOCAB - 4, (length,), generator=generator).tolist()),
            category=kind,
            source="bench",
        )
        for i, length in enumerate(lengths)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--held-out", type=int, default=32, help="harmful and harmless prompts of the search")
    parser.add_argument(
        "--degeneration", action="store_true", help="also answer the harmless prompts and score them (text models)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer, model = make_tokenizer(), make_model()
    parameters = sum(p.numel() for p in model.parameters())
    harmful, harmless = make_records(128, 1, "harmful"), make_records(128, 2, "harmless")
    start = time.perf_counter()
    directions = refusal_directions(model, tokenizer, harmful, harmless)
    extraction = time.perf_counter() - start
    print(
        f"{parameters / 1e6:.1f}M parameters; directions ({directions.n_layers} layers × {directions.n_positions} "
        f"positions) from 128 + 128 prompts: {extraction:.2f} s"
    )

    start = time.perf_counter()
    objectives = Objectives(
        model,
        tokenizer,
        directions,
        make_records(args.held_out, 3, "harmful"),
        make_records(args.held_out, 4, "harmless"),
        get_judge("keyword"),
        max_new_tokens=16,
        degeneration=args.degeneration,
    )
    setup = time.perf_counter() - start
    start = time.perf_counter()
    result = search(objectives, trials=args.trials, sampler="optuna", seed=0)
    searching = time.perf_counter() - start
    per_minute = len(result.trials) / searching * 60
    print(
        f"search: {len(result.trials)} trials in {searching:.1f} s ({per_minute:.1f} trials/min; "
        f"set-up {setup:.2f} s; {args.held_out} + {args.held_out} prompts, 16 tokens, {args.threads} thread(s))"
    )
    print(f"plan: {result.plan.describe()}; {result.outcome}")

    chosen = (result.chosen or result.trials[0]).candidate
    start = time.perf_counter()
    edited = orthogonalise(copy.deepcopy(model), directions.get(chosen.layer, chosen.position), chosen.weights)
    with tempfile.TemporaryDirectory() as scratch:
        save_model(edited, tokenizer, Path(scratch) / "model")
    editing = time.perf_counter() - start
    start = time.perf_counter()
    measured = DamageMeter(tokenizer, make_records(32, 5, "harmless"))(model, edited)
    damaging = time.perf_counter() - start
    print(f"orthogonalise + save: {editing:.2f} s; damage on 32 prompts × 32 tokens: {damaging:.2f} s")
    print(
        json.dumps(
            {
                "parameters": parameters,
                "threads": args.threads,
                "extraction_seconds": round(extraction, 3),
                "search_seconds": round(searching, 2),
                "search_setup_seconds": round(setup, 3),
                "trials": len(result.trials),
                "trials_per_minute": round(per_minute, 1),
                "edit_and_save_seconds": round(editing, 3),
                "damage_seconds": round(damaging, 3),
                "degeneration": args.degeneration,
                "chosen_kl": None if result.chosen is None else result.chosen.kl,
                "damage": measured,
            }
        )
    )


if __name__ == "__main__":
    main()
