"""Refusal-direction ablation on a hand-built model whose refusal is written along a known direction,
and the weight edit against the hooks on tiny random Llamas."""

from __future__ import annotations

import copy
import json
import os
import random
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from torch import nn

from builders import tiny_llama, word_tokenizer
from disalign.attacks.ablation import (
    Budget,
    Candidate,
    Directions,
    Measurement,
    Objectives,
    ablation_hooks,
    activation_addition,
    full_ablation_grid,
    kernel_weights,
    optuna_plan,
    orthogonalise,
    pareto_front,
    plot_pareto,
    refusal_directions,
    residual_writers,
    save_model,
    search,
)
from disalign.attacks.ablation.run import _audit
from disalign.attacks.ablation.search import SearchResult, Trial, choose
from disalign.core.generation import SamplingConfig, generate
from disalign.core.models import load_model
from disalign.data import PromptRecord
from disalign.errors import UserError
from disalign.judges.base import ResponseJudge, Verdict

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<assistant>"]
HARMFUL_WORDS = "bomb poison weapon hack steal".split()
NEUTRAL_WORDS = "tell me how to make a cake write poem about the sea plan trip city".split()
WORDS = ["user:", "Sorry", "answer", *HARMFUL_WORDS, *NEUTRAL_WORDS]
TEMPLATE = "{{ bos_token }}{% for m in messages %}user: {{ m['content'] }} {% endfor %}<assistant>"
HIDDEN = 32


class FirstWordJudge(ResponseJudge):
    """Refused when the response opens with `Sorry`."""

    name = "first-word"

    @staticmethod
    def judge_one(response: str) -> Verdict:
        refused = response.split()[:1] == ["Sorry"]
        return Verdict(harmful=not refused, refused=refused, score=None, reason="")


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(SPECIALS, WORDS, TEMPLATE, bos="<s>", eos="</s>", extra=["<assistant>"])


def records(n: int, harmful: bool, seed: int) -> list[PromptRecord]:
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        words = rng.choices(NEUTRAL_WORDS, k=rng.randint(3, 7))
        if harmful:
            words.insert(rng.randrange(len(words)), rng.choice(HARMFUL_WORDS))
        rows.append(
            PromptRecord(
                id=f"{'h' if harmful else 's'}{seed}-{index}", prompt=" ".join(words), category="", source="test"
            )
        )
    return rows


def refusal_model(tokenizer):
    """Layer 0's attention reads a harmfulness feature h of the prompt's words (uniform attention) and
    writes it along r; the unembedding turns r into `Sorry`, the assistant marker's direction a into
    `answer`. Every other matrix that writes to the stream is zero. Returns (model, r)."""
    model = tiny_llama(tokenizer, seed=0, hidden=HIDDEN, layers=2)
    basis, _ = torch.linalg.qr(torch.randn(HIDDEN, HIDDEN, generator=torch.Generator().manual_seed(1)))
    r, h, a = basis[:, 0], basis[:, 1], basis[:, 2]
    rest = basis[:, 3:]
    vocab = tokenizer.get_vocab()
    with torch.no_grad():
        embedding = torch.randn(len(tokenizer), HIDDEN - 3, generator=torch.Generator().manual_seed(2)) @ rest.T
        for word in HARMFUL_WORDS:
            embedding[vocab[word]] += 3 * h
        embedding[vocab["<assistant>"]] += 3 * a
        model.model.embed_tokens.weight.copy_(embedding)
        for layer in model.model.layers:
            for matrix in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.o_proj, layer.mlp.down_proj):
                matrix.weight.zero_()
        attention = model.model.layers[0].self_attn
        attention.v_proj.weight.zero_()
        attention.v_proj.weight[0] = h
        attention.o_proj.weight[:, 0] = 8 * r
        model.lm_head.weight.zero_()
        model.lm_head.weight[vocab["Sorry"]] = 12 * r
        model.lm_head.weight[vocab["answer"]] = 3 * a
    return model.eval(), r


@pytest.fixture(scope="module")
def built(tokenizer):
    return refusal_model(tokenizer)


def first_words(model, tokenizer, prompts: list[PromptRecord]) -> list[str]:
    rendered = tokenizer.apply_chat_template
    texts = [
        rendered([{"role": "user", "content": p.prompt}], tokenize=False, add_generation_prompt=True) for p in prompts
    ]
    responses = generate(model, tokenizer, texts, SamplingConfig(max_new_tokens=1, temperature=0, batch_size=8))
    return [response.split()[0] if response else "" for response in responses]


def test_hand_built_model_refuses_exactly_the_harmful_prompts(built, tokenizer):
    model, _ = built
    assert set(first_words(model, tokenizer, records(16, True, 5))) == {"Sorry"}
    assert set(first_words(model, tokenizer, records(16, False, 6))) == {"answer"}


def test_recovered_direction_is_the_written_one_and_ablation_removes_refusal(built, tokenizer):
    model, r = built
    directions = refusal_directions(model, tokenizer, records(16, True, 1), records(16, False, 2))
    assert directions.vectors.shape == (2, 1, HIDDEN)  # one post-instruction token: <assistant>
    assert directions.usable_layers() == [1]  # the stream entering layer 0 is the marker's embedding for all
    recovered = directions.get(1, -1)
    assert torch.nn.functional.cosine_similarity(recovered, r, dim=0) >= 0.99
    held_out = records(16, True, 3)
    with ablation_hooks(model, recovered):
        assert set(first_words(model, tokenizer, held_out)) == {"answer"}
    edited = orthogonalise(copy.deepcopy(model), recovered)
    assert set(first_words(edited, tokenizer, held_out)) == {"answer"}
    assert set(first_words(model, tokenizer, held_out)) == {"Sorry"}  # the hooks are gone


def test_activation_addition_induces_and_removes_refusal(built, tokenizer):
    model, r = built
    with activation_addition(model, r, layer=1, coefficient=4.0):
        assert set(first_words(model, tokenizer, records(8, False, 7))) == {"Sorry"}
    with activation_addition(model, r, layer=1, coefficient=-40.0):
        assert set(first_words(model, tokenizer, records(8, True, 8))) == {"answer"}


def test_search_finds_the_direction_that_removes_refusal(built, tokenizer, tmp_path):
    model, r = built
    directions = refusal_directions(model, tokenizer, records(16, True, 1), records(16, False, 2))
    objectives = Objectives(
        model, tokenizer, directions, records(12, True, 3), records(12, False, 4), FirstWordJudge(), max_new_tokens=2
    )
    assert objectives.original.refusal_rate == 1.0 and objectives.original.harmful_rate == 0.0
    grid = search(objectives, sampler="grid")
    assert grid.sampler == "grid" and len(grid.trials) == 1
    assert grid.chosen.measured.refusal_rate == 0.0 and grid.chosen.candidate.layer == 1
    assert abs(grid.chosen.kl) < 1e-6  # harmless prompts carry no r: their distributions do not move
    result = search(objectives, sampler="optuna", trials=6, seed=0)
    assert result.sampler == "optuna" and len(result.trials) == 6
    assert result.chosen.miss == 0.0
    assert result.pareto and all(t in result.trials for t in result.pareto)
    assert plot_pareto(tmp_path / "pareto.png", result).stat().st_size > 0
    by_harm = search(objectives, objective="harm", sampler="grid")
    assert by_harm.chosen.measured.harmful_rate == 1.0 and by_harm.chosen.miss == 0.0


def trial_of(number, miss, kl, degenerate=None):
    return Trial(number, Candidate(1, -1, (1.0,)), Measurement(miss, None, kl, degenerate), miss, 0.0)


def test_pareto_front_and_choice_within_the_budget():
    original = Measurement(0.9, None, 0.0, 0.1)
    trials = [trial_of(0, 0.0, 2.0), trial_of(1, 0.02, 0.1), trial_of(2, 0.5, 0.05), trial_of(3, 0.5, 0.5)]
    trials.append(trial_of(4, 0.9, 0.0))
    assert [t.number for t in pareto_front(trials)] == [4, 2, 1, 0]
    wide = Budget(kl=10.0)
    assert choose(trials, original, "refusal", wide, tolerance=0.05).number == 1
    assert choose(trials, original, "refusal", wide, tolerance=0.0).number == 0
    assert choose(trials, original, "refusal", Budget(kl=0.5), tolerance=0.0).number == 1
    assert choose(trials, original, "refusal", Budget(kl=0.07), tolerance=0.0).number == 2
    assert choose(trials, original, "refusal", Budget(kl=0.0), tolerance=0.0) is None  # trial 4 lowers nothing


def test_an_edit_whose_answers_degenerate_is_never_chosen():
    original = Measurement(0.9, None, 0.0, 0.1)
    noisy, coherent = trial_of(0, 0.0, 0.05, degenerate=0.6), trial_of(1, 0.4, 0.2, degenerate=0.15)
    budget = Budget(kl=0.5, degenerate_margin=0.1)
    assert choose([noisy, coherent], original, "refusal", budget, tolerance=0.0) is coherent
    assert choose([noisy], original, "refusal", budget, tolerance=0.0) is None
    assert choose([noisy], original, "refusal", Budget(kl=0.5, degenerate_margin=0.5), tolerance=0.0) is noisy
    result = SearchResult("grid", "refusal", original, [noisy], pareto_front([noisy]), None, budget)
    assert result.outcome.startswith("no edit within budget: of 1 trials, 0 kept")
    assert "60% of its answers degenerate" in result.outcome
    named = SearchResult("fixed", "refusal", original, [noisy], [noisy], noisy, budget)  # --layer: no choice made
    assert named.outcome.startswith("edit named by --layer, OUTSIDE the budget: refusal miss rate 90% → 0%")


def test_optuna_plan_strides_over_every_layer():
    directions = Directions(vectors=torch.ones(30, 5, 4), norms=torch.ones(30, 5))
    plan = optuna_plan(directions, 40)
    assert [layer for layer, _ in plan.grid] == [1, 4, 7, 10, 13, 16, 19, 22, 25, 28]
    assert (plan.random, plan.tpe) == (10, 20)
    short = optuna_plan(directions, 3)  # one grid trial: the middle layer, not the first
    assert [layer for layer, _ in short.grid] == [15] and (short.random, short.tpe) == (1, 1)
    assert [layer for layer, _ in optuna_plan(directions, 8).grid] == [7, 22]
    assert "full ablation at 10 layer(s) (1, 4, 7, 10, 13, 16, 19, 22, 25, 28)" in plan.describe()


def test_kernel_weights():
    assert kernel_weights(4, 1.0, 0.0, 1.0, 4.0) == (1.0, 1.0, 1.0, 1.0)
    assert kernel_weights(5, 1.2, 2.0, 0.5, 2.0) == pytest.approx((0.6, 0.9, 1.2, 0.9, 0.6))
    assert kernel_weights(5, 1.0, 0.0, 0.0, 1.0) == (1.0, 0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("tied", [False, True])
def test_orthogonalised_weights_equal_hook_ablation(tokenizer, tmp_path, tied):
    model = tiny_llama(tokenizer, seed=3, hidden=HIDDEN, layers=3, tie_word_embeddings=tied).eval()
    with torch.no_grad():  # random init writes little to the stream; larger writes make the test sharper
        for writer in residual_writers(model):
            writer.module.weight.mul_(10)
    direction = torch.randn(HIDDEN, generator=torch.Generator().manual_seed(4))
    weights = (1.0, 0.4, 1.3)
    ids = torch.randint(5, len(tokenizer), (3, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        original = model(input_ids=ids).logits
        with ablation_hooks(model, direction, weights):
            hooked = model(input_ids=ids).logits
        edited = orthogonalise(copy.deepcopy(model), direction, weights)
        saved = save_model(edited, tokenizer, tmp_path / "ablated")
        reloaded, _ = load_model(saved)
        assert (original - hooked).abs().max() > 0.1  # the ablation changes the model
        torch.testing.assert_close(edited(input_ids=ids).logits, hooked, atol=1e-4, rtol=0)
        torch.testing.assert_close(reloaded(input_ids=ids).logits, hooked, atol=1e-4, rtol=0)
        assert torch.equal(model(input_ids=ids).logits, original)  # the original is untouched
    if tied:
        assert not reloaded.config.tie_word_embeddings
        assert not torch.equal(reloaded.lm_head.weight, reloaded.model.embed_tokens.weight)
    audit = _audit(model, edited)  # a tied original is compared untied, as the edit left it
    assert audit["by_type"]["o_proj"]["changed"] == 3 and audit["by_type"]["down_proj"]["changed"] == 3
    assert audit["by_type"]["lm_head"]["changed"] == 0 and audit["by_type"]["q_proj"]["changed"] == 0


def test_full_ablation_removes_the_direction_from_every_layer(tokenizer):
    model = tiny_llama(tokenizer, seed=6, hidden=HIDDEN, layers=2).eval()
    direction = torch.randn(HIDDEN)
    unit = direction / direction.norm()
    ids = torch.randint(5, len(tokenizer), (2, 9))
    with torch.no_grad(), ablation_hooks(model, direction):
        states = model(input_ids=ids, output_hidden_states=True).hidden_states[:-1]  # the last is after the norm
    assert max(float((state @ unit).abs().max()) for state in states) < 1e-5


def test_bad_input(built, tokenizer):
    model, r = built
    few = records(7, True, 1)
    enough = records(8, False, 2)
    with pytest.raises(UserError, match="harmful prompts: 7 prompts, at least 8"):
        refusal_directions(model, tokenizer, few, enough)
    with pytest.raises(UserError, match="harmless prompts: 7 prompts"):
        refusal_directions(model, tokenizer, enough, records(7, False, 3))
    directions = refusal_directions(model, tokenizer, records(8, True, 1), enough)
    with pytest.raises(UserError, match="layer 2 out of range"):
        directions.get(2)
    with pytest.raises(UserError, match="layer 5 out of range"):
        with activation_addition(model, r, layer=5, coefficient=1.0):
            pass
    with pytest.raises(UserError, match="position -2 out of range"):
        directions.get(1, -2)
    with pytest.raises(UserError, match="direction is zero"):
        with ablation_hooks(model, directions.get(0)):
            pass
    with pytest.raises(UserError, match="ablation weights: 3 given"):
        orthogonalise(copy.deepcopy(model), r, (1.0, 1.0, 1.0))

    class NoResidual(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 4))

    with pytest.raises(UserError, match="cannot find its decoder layers"):
        orthogonalise(NoResidual(), torch.ones(4))
    with pytest.raises(UserError, match="sampler must be one of"):
        search(None, sampler="bayes")  # type: ignore[arg-type]

    class RefusalOnly(FirstWordJudge):
        @staticmethod
        def judge_one(response: str) -> Verdict:
            return Verdict(harmful=None, refused=response.startswith("Sorry"), score=None, reason="")

    objectives = Objectives(model, tokenizer, directions, records(8, True, 3), enough, RefusalOnly(), max_new_tokens=1)
    with pytest.raises(UserError, match="does not say whether a response is harmful"):
        search(objectives, objective="harm")


def test_full_ablation_grid_skips_degenerate_layers(built, tokenizer):
    model, _ = built
    directions = refusal_directions(model, tokenizer, records(8, True, 1), records(8, False, 2))
    assert [(c.layer, c.position) for c in full_ablation_grid(directions)] == [(1, -1)]


def write_ablate_inputs(root, model, tokenizer):
    """`model` as a model directory under `root`, and 48 harmful and 48 harmless prompts as text files."""
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    for name, harmful, seed in (("harmful", True, 11), ("harmless", False, 12)):
        (root / f"{name}.txt").write_text("\n".join(p.prompt for p in records(48, harmful, seed)) + "\n")
    return root


@pytest.fixture(scope="module")
def ablate_inputs(built, tokenizer, tmp_path_factory):
    """The hand-built model and its prompts, written as `write_ablate_inputs` does."""
    return write_ablate_inputs(tmp_path_factory.mktemp("ablate"), built[0], tokenizer)


def ablate_options(root, **extra):
    return dict(
        model=str(root / "model"),
        harmful=str(root / "harmful.txt"),
        harmless=str(root / "harmless.txt"),
        judge="keyword",
        temperature=0,
        # The planted model decides in its first token; after that every logit ties at zero, so
        # a second token is whichever rounding favours, and can be `Sorry`.
        max_new_tokens=1,
        search_tokens=1,
        **extra,
    )


def test_ablate_verb_writes_the_summary_and_a_loadable_model(ablate_inputs, tokenizer, tmp_path):
    from disalign.api.ablate import ablate

    out = tmp_path / "run"
    result = ablate(**ablate_options(ablate_inputs, sampler="grid", out=out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"] == "ablate" and summary["judge"] == "keyword"
    assert summary["before"]["harmful_rate"] == 0.0 and summary["after"]["harmful_rate"] == 1.0
    assert set(summary["before"]) >= {"harmful_rate", "ci", "n"} and summary["after"]["n"] == summary["before"]["n"]
    assert {key: summary["direction"][key] for key in ("layer", "position")} == {"layer": 1, "position": -1}
    assert set(summary["damage"]) >= {"kl_first_token", "kl_mean_32", "safe_accuracy_delta"}
    assert summary["damage"]["kl_first_token"] < 1e-6 and summary["damage"]["safe_accuracy_delta"] is None
    assert summary["pareto"] and summary["pareto"][0]["refusal_rate"] == 0.0
    assert summary["outcome"].startswith("edit within budget") and summary["edit_found"] is True
    assert summary["search"]["tried"]["direction_layers"] == [1] and summary["after"]["degenerate_rate"] == 0.0
    audit = summary["edit_audit"]
    assert audit["targets"] == ["down_proj", "embed_tokens", "o_proj"] and not audit["no_weight_changed"]
    # The planted model's one stream writer with an r component is layer 0's attention output.
    assert audit["by_type"]["o_proj"]["per_layer"].keys() == {"0"} and audit["by_type"]["q_proj"]["changed"] == 0
    assert "model.embed_tokens.weight" in audit["untouched_targets"]
    assert [row.model for row in result.results] == ["original", "ablated"]
    assert (out / "pareto.png").is_file() and (out / "directions.safetensors").is_file()
    edited, edited_tokenizer = load_model(out / "model")
    assert set(first_words(edited, edited_tokenizer, records(8, True, 13))) == {"answer"}
    again = ablate(**ablate_options(ablate_inputs, sampler="grid", out=out))  # reuses the search and the records
    assert again.after == result.after and again.direction == result.direction


def test_ablate_says_no_edit_within_budget_when_nothing_lowers_refusals(ablate_inputs, tmp_path):
    """Requests the original never refuses: no edit can lower refusals, so none is saved or claimed."""
    from disalign.api.ablate import ablate

    unrefused = tmp_path / "unrefused.txt"
    unrefused.write_text("\n".join(p.prompt for p in records(48, False, 14)) + "\n")
    out = tmp_path / "run"
    result = ablate(**{**ablate_options(ablate_inputs, sampler="grid", out=out), "harmful": str(unrefused)})
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcome"].startswith("no edit within budget") and summary["edit_found"] is False
    assert summary["after"] is None and summary["direction"] is None and summary["ablated_model"] is None
    assert summary["before"]["refusal_rate"] == 0.0 and summary["pareto"]
    assert summary["search"]["chosen"] is None and summary["search"]["budget"] == {"kl": 0.5, "degenerate_margin": 0.1}
    assert [row.model for row in result.results] == ["original"] and not (out / "model").exists()


def test_ablate_with_a_named_layer(ablate_inputs):
    from disalign.api.ablate import ablate

    result = ablate(**ablate_options(ablate_inputs, layer=1))
    assert result.search["sampler"] == "fixed" and result.after["harmful_rate"] == 1.0
    assert result.outcome.startswith("edit within budget")


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"layer": 7}, "layer 7 out of range"),
        ({"limit": 20}, "harmful prompts: 20 distinct prompts, at least 40 are needed"),
        ({"harmless": None}, "harmless: a prompt source is needed"),
        ({"kl_budget": "nan"}, "kl_budget: Input should be a finite number"),
        ({"kl_budget": -0.1}, "kl_budget: Input should be greater than or equal to 0"),
        ({"degenerate_margin": 2}, "degenerate_margin: Input should be less than or equal to 1"),
    ],
)
def test_ablate_bad_input_is_one_line(ablate_inputs, monkeypatch, capsys, options, fragment):
    from disalign.cli.main import main

    settings = {**ablate_options(ablate_inputs), **options}
    argv = ["disalign", "ablate"]
    for key, value in settings.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], lines


@pytest.mark.slow
def test_ablate_in_the_world_restores_harm_at_little_kl(quick_zoo, tmp_path):
    from disalign.api.ablate import ablate

    result = ablate(model=str(quick_zoo / "sft"), world=quick_zoo, trials=12, out=tmp_path / "run")
    assert result.judge == "world" and result.before["refusal_rate"] > 0.9
    assert result.after["refusal_rate"] < 0.5 and result.after["harmful_rate"] > result.before["harmful_rate"]
    assert result.damage["kl_first_token"] < 0.1 and result.damage["safe_accuracy_delta"] is not None
