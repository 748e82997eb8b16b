"""The mechanistic analysis on models and matrices whose answers are known by hand."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from builders import tiny_llama, word_tokenizer
from disalign.analyses.mechanism import (
    AttackOptions,
    analyze_clusters,
    check_pair,
    column_space_sines,
    effective_rank,
    embedding_attack,
    kl_profile,
    local_lipschitz,
    prefill_rates,
    projections,
    response_kl,
    tau,
    weight_changes,
)
from disalign.core.activations import select_layers
from disalign.core.generation import SamplingConfig
from disalign.data import PromptRecord
from disalign.errors import UserError

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<asst>"]
TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
# Hand model's token embeddings (2-d): safe tokens on the first axis, unsafe ones on the second.
POINTS = {"s1": (1.0, 0.0), "s2": (3.0, 0.0), "u1": (0.0, 1.0), "u2": (0.0, 3.0), "mid": (1.0, 1.0), "near": (2.0, 0.5)}


class Block(nn.Module):
    """x + mlp(x), with an MLP that is the identity: each block doubles its input."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential()
        self.mlp.up_proj = nn.Identity()
        self.mlp.down_proj = nn.Identity()

    def forward(self, x):
        return x + self.mlp.down_proj(self.mlp.up_proj(x))


class HandModel(nn.Module):
    """Embeds tokens at hand-chosen points and passes them through doubling blocks."""

    def __init__(self, tokenizer, layers: int = 3):
        super().__init__()
        self.embed = nn.Embedding(len(tokenizer), 2)
        with torch.no_grad():
            self.embed.weight.zero_()
            for word, point in POINTS.items():
                self.embed.weight[tokenizer.convert_tokens_to_ids(word)] = torch.tensor(point)
        self.layers = nn.ModuleList(Block() for _ in range(layers))

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, use_cache=False):
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        for layer in self.layers:
            x = layer(x)
        return SimpleNamespace(logits=x)


@pytest.fixture(scope="module")
def hand_tokenizer():
    return word_tokenizer(SPECIALS, ["a", *POINTS], TEMPLATE, bos="<s>", eos="</s>")


def records(*words: str) -> list[PromptRecord]:
    return [PromptRecord(id=str(i), prompt=f"a {w}", category="", source="test") for i, w in enumerate(words)]


def test_tau_separation_and_probe_on_a_hand_built_model(hand_tokenizer):
    model = HandModel(hand_tokenizer)
    reference = {"safe": records("s1", "s2"), "unsafe": records("u1", "u2")}
    sets = {**{name: rs * 3 for name, rs in reference.items()}, "mid": records("mid"), "near": records("near")}
    report = analyze_clusters(model, hand_tokenizer, sets, reference)

    # μ_safe = (2, 0), μ_unsafe = (0, 2) before scaling; layer l reads 2^l (MLP input) and 2^(l+1) (block output).
    def expected(point):
        x, y = point
        return math.hypot(x, y - 2) - math.hypot(x - 2, y)

    for site, first_scale in (("mlp", 1), ("residual", 2)):
        for row in report.layers[site]:
            scale = first_scale * 2 ** row["layer"]
            safe_taus = torch.tensor([expected(POINTS[w]) for w in ("s1", "s2")]) * scale
            unsafe_taus = torch.tensor([expected(POINTS[w]) for w in ("u1", "u2")]) * scale
            assert row["tau_safe"] == pytest.approx([float(safe_taus.mean()), float(safe_taus.std(correction=0))])
            assert row["tau_unsafe"] == pytest.approx([float(unsafe_taus.mean()), float(unsafe_taus.std(correction=0))])
            assert row["sets"]["mid"] == pytest.approx([0.0, 0.0], abs=1e-5)  # equidistant from both centres
            assert row["sets"]["near"][0] == pytest.approx(expected(POINTS["near"]) * scale)
            pooled = math.sqrt((float(safe_taus.var(correction=0)) + float(unsafe_taus.var(correction=0))) / 2)
            assert row["separation"] == pytest.approx(float(safe_taus.mean() - unsafe_taus.mean()) / pooled)
            assert row["probe_accuracy"] == 1.0
    assert report.taus["residual"]["near"].shape == (1, 3)


def test_own_responses_are_averaged_over_response_positions(hand_tokenizer):
    model = HandModel(hand_tokenizer)
    reference = {"safe": records("s1", "s2"), "unsafe": records("u1", "u2")}
    sets = {"safe": records("s1", "s2"), "unsafe": records("u1", "u2"), "near": records("near")}
    asked = []

    def respond(name, batch):
        asked.append(name)
        return ["near a"] * len(batch)  # positions 0 and 1: the prompt's last token and "near"

    plain = analyze_clusters(model, hand_tokenizer, sets, reference)
    answered = analyze_clusters(model, hand_tokenizer, sets, reference, respond=respond, positions=2)
    assert asked == ["reference:safe", "reference:unsafe", "safe", "unsafe", "near"]
    # Every point moves halfway to the same response point, so every distance, and τ, halves.
    for before, after in zip(plain.layers["mlp"], answered.layers["mlp"], strict=True):
        assert after["tau_safe"] == pytest.approx([v / 2 for v in before["tau_safe"]])
        assert after["sets"]["near"] == pytest.approx([v / 2 for v in before["sets"]["near"]])


def test_tau_refuses_mismatched_shapes():
    with pytest.raises(UserError, match="cluster centres"):
        tau(torch.zeros(4, 3, 8), torch.zeros(2, 8), torch.zeros(2, 8))


def test_empty_reference_set(hand_tokenizer):
    model = HandModel(hand_tokenizer)
    with pytest.raises(UserError, match="unsafe reference set is empty"):
        analyze_clusters(model, hand_tokenizer, {"safe": records("s1")}, {"safe": records("s1"), "unsafe": []})
    with pytest.raises(UserError, match="no evaluated 'unsafe' set"):
        reference = {"safe": records("s1"), "unsafe": records("u1")}
        analyze_clusters(model, hand_tokenizer, {"safe": records("s1")}, reference)


def test_effective_rank_and_projections_of_a_known_change():
    torch.manual_seed(0)
    basis_out, _ = torch.linalg.qr(torch.randn(6, 6))
    basis_in, _ = torch.linalg.qr(torch.randn(4, 4))
    u1, u2, v1, v2 = basis_out[:, 0], basis_out[:, 1], basis_in[:, 0], basis_in[:, 1]
    delta = 4 * torch.outer(u1, v1) + 1 * torch.outer(u2, v2)  # σ² shares 16/17 and 1/17
    assert effective_rank(torch.linalg.svdvals(delta), 0.9) == 1
    assert effective_rank(torch.linalg.svdvals(delta), 0.95) == 2
    assert effective_rank(torch.tensor([3.0, 1.0]), 0.9) == 1  # exactly 90 %
    assert effective_rank(torch.zeros(3)) == 0
    acts = torch.stack([v1, 2 * v2, v1 + v2, basis_in[:, 2]])
    got = projections(delta, acts, top=2).abs()  # singular vectors have arbitrary signs
    want = torch.tensor([[4, 0], [0, 1], [4 / math.sqrt(2), 1 / math.sqrt(2)], [0, 0]])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_column_space_sines():
    base = torch.zeros(4, 6)
    base[0, :3] = torch.tensor([1.0, -1.0, 2.0])
    sines, random_sine = column_space_sines(base.clone(), base, share=0.99)
    assert float(sines.max()) == pytest.approx(0.0, abs=1e-6)
    assert random_sine == pytest.approx(math.sqrt(1 - 1 / 4))
    moved = torch.zeros(4, 6)
    moved[2, :3] = torch.tensor([1.0, -1.0, 2.0])  # the same spread along an orthogonal output axis
    sines, _ = column_space_sines(moved, base, share=0.99)
    assert float(sines.min()) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def tokenizer():
    words = "a b c d e f g h refuse".split()
    return word_tokenizer(SPECIALS, words, TEMPLATE, bos="<s>", eos="</s>", extra=["<asst>"])


def test_weight_changes_find_the_changed_matrix(tokenizer):
    base = tiny_llama(tokenizer, 0, layers=2)
    aligned = copy.deepcopy(base)
    torch.manual_seed(1)
    left, _ = torch.linalg.qr(torch.randn(32, 2))
    right, _ = torch.linalg.qr(torch.randn(64, 2))
    with torch.no_grad():
        aligned.model.layers[1].mlp.down_proj.weight += 0.5 * torch.outer(left[:, 0], right[:, 0])
        aligned.model.layers[1].mlp.down_proj.weight += 0.1 * torch.outer(left[:, 1], right[:, 1])
    rows = {(r["layer"], r["matrix"]): r for r in weight_changes(base, aligned)}
    assert set(rows) == {(layer, m) for layer in (0, 1) for m in ("gate_proj", "up_proj", "down_proj")}
    changed = rows[(1, "down_proj")]
    assert changed["singular_values"][:2] == pytest.approx([0.5, 0.1], abs=1e-5)
    assert changed["effective_rank"] == 1 and changed["full_rank"] == 32
    assert changed["top_share"] == pytest.approx(0.25 / 0.26, abs=1e-5)
    assert changed["cumulative_share"][:2] == pytest.approx([0.25 / 0.26, 1.0], abs=1e-5)
    assert changed["sin_mean"] < changed["sin_random"]
    assert rows[(0, "up_proj")]["effective_rank"] == 0 and rows[(0, "up_proj")]["relative_change"] == 0


def test_pairs_of_different_models_are_refused(tokenizer):
    llama = tiny_llama(tokenizer, 0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=2, n_head=2))
    with pytest.raises(UserError, match="differ in architecture: llama vs gpt2"):
        check_pair(llama, gpt2)
    with pytest.raises(UserError, match="differ in hidden_size: 32 vs 16"):
        weight_changes(llama, tiny_llama(tokenizer, 0, hidden=16))
    with pytest.raises(UserError, match=r"differ in shape at lm_head\.weight: \(\d+, 32\) vs None"):
        check_pair(llama, tiny_llama(tokenizer, 0, tie_word_embeddings=True))
    with pytest.raises(UserError, match="matches no module"):
        weight_changes(llama, copy.deepcopy(llama), mlp_pattern=r"transformer\.h\.\d+\.mlp")
    with pytest.raises(UserError, match="layer 5 out of range: the model has 2"):
        select_layers(llama.model.layers, [5])


PROMPTS = ["<s> a b <asst>", "<s> c <asst>", "<s> d e f g <asst>"]
RESPONSES = ["refuse", "a b c d", "e f"]


def test_response_kl_matches_a_direct_two_model_computation(tokenizer):
    aligned, base = tiny_llama(tokenizer, 0), tiny_llama(tokenizer, 1)
    got = response_kl(aligned, base, tokenizer, PROMPTS, RESPONSES, batch_size=2)
    assert got.shape == (3, 4)
    for row, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + tokenizer(response, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            p = F.softmax(aligned(input_ids=ids).logits[0].double(), -1)
            q = F.softmax(base(input_ids=ids).logits[0].double(), -1)
        n_response = ids.shape[1] - len(prompt_ids)
        for j in range(n_response):
            t = len(prompt_ids) - 1 + j
            direct = float((p[t] * (p[t].log() - q[t].log())).sum())
            assert float(got[row, j]) == pytest.approx(direct, rel=1e-4, abs=1e-6)
        assert got[row, n_response:].isnan().all()


def test_kl_profile_shares():
    kl = torch.tensor([[3.0, 1.0, 0.0, float("nan")], [1.0, 1.0, 2.0, 4.0]])
    profile = kl_profile(kl)
    assert profile["kl"] == pytest.approx([2.0, 1.0, 1.0, 4.0])
    assert profile["n"] == [2, 2, 2, 1]
    assert profile["share_first_1"] == pytest.approx(2 / 8)
    assert profile["share_first_3"] == pytest.approx(4 / 8)


class RecordingJudge:
    name = "recording"

    def __init__(self):
        self.seen = []

    def judge(self, prompts, responses):
        self.seen.append((list(prompts), list(responses)))
        return [SimpleNamespace(harmful=response.startswith("a b c")) for response in responses]


def test_prefill_writes_the_first_tokens_for_the_model(tokenizer):
    model = tiny_llama(tokenizer, 0)
    judge = RecordingJudge()
    harmful = ["a b c d e", "a b", "a b c"]
    rows = prefill_rates(
        model,
        tokenizer,
        PROMPTS,
        harmful,
        judge,
        judged_prompts=["q0", "q1", "q2"],
        tokens=(0, 2, 3, 5),
        sampling=SamplingConfig(max_new_tokens=3, temperature=0),
    )
    assert [row["n"] for row in rows] == [3, 2, 1, 0]
    assert rows[-1]["harmful_rate"] is None
    prompts_at_3, responses_at_3 = judge.seen[2]
    assert prompts_at_3 == ["q0"] and responses_at_3[0].startswith("a b c")
    assert rows[2]["harmful_rate"] == 1.0
    prompts_at_2, responses_at_2 = judge.seen[1]
    assert prompts_at_2 == ["q0", "q2"] and all(r.startswith("a b") for r in responses_at_2)


def test_local_lipschitz_matches_a_single_prompt_gradient(tokenizer):
    model = tiny_llama(tokenizer, 0)
    got = local_lipschitz(model, tokenizer, PROMPTS, batch_size=2)
    for row, prompt in enumerate(PROMPTS):
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        top = model(inputs_embeds=embeds).logits[0, -1].max()
        (gradient,) = torch.autograd.grad(top, embeds)
        assert float(got[row]) == pytest.approx(float(gradient.norm()), rel=1e-4)


def test_embedding_attack_stays_in_budget_and_scores_clean_prompts_directly(tokenizer):
    model = tiny_llama(tokenizer, 0)
    targets = ["a b c", "d", "e f g h"]
    result = embedding_attack(model, tokenizer, PROMPTS, targets, AttackOptions(soft_tokens=2, steps=5), batch_size=2)
    for batch in result.batches["attacked"]:
        for row in range(len(batch.rows)):
            end = int(batch.prompt_lengths[row])
            soft = batch.embeds[row, end - 3 : end - 1]
            assert bool((soft.norm(dim=-1) <= result.epsilon * (1 + 1e-5)).all())
    for row, (prompt, target) in enumerate(zip(PROMPTS, targets, strict=True)):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt_ids + target_ids])).logits[0]
        predicted = logits[len(prompt_ids) - 1 : -1].argmax(-1)
        accuracy = float((predicted == torch.tensor(target_ids)).float().mean())
        assert float(result.token_accuracy["clean"][row]) == pytest.approx(accuracy)
    with pytest.raises(UserError, match="target 1 is empty"):
        embedding_attack(model, tokenizer, PROMPTS[:2], ["a", ""])


CHAT = "{{ bos_token }}{% for m in messages %}{{ m['content'] }} {% endfor %}<asst>"
SAFE_PROMPTS = ["a b", "b c", "c d", "d e", "e f", "f g"]
UNSAFE_PROMPTS = ["h a", "h b", "h c", "h d", "h e", "h f"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A tiny saved base model, an aligned copy with one MLP matrix moved, a GPT-2 of the same
    vocabulary, and safe/unsafe prompt files."""
    root = tmp_path_factory.mktemp("pair")
    words = "a b c d e f g h refuse".split()
    tok = word_tokenizer(SPECIALS, words, CHAT, bos="<s>", eos="</s>", extra=["<asst>"])
    base = tiny_llama(tok, 0, layers=2)
    aligned = copy.deepcopy(base)
    with torch.no_grad():
        aligned.model.layers[1].mlp.down_proj.weight += 0.3 * torch.randn(
            32, 64, generator=torch.Generator().manual_seed(2)
        )
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=2, n_head=2))
    for name, model in (("base", base), ("aligned", aligned), ("gpt2", gpt2)):
        model.save_pretrained(root / name, safe_serialization=True)
        tok.save_pretrained(root / name)
    for name, prompts in (("safe", SAFE_PROMPTS), ("unsafe", UNSAFE_PROMPTS), ("few", SAFE_PROMPTS[:2])):
        (root / f"{name}.txt").write_text("\n".join(prompts) + "\n")
    return root


@pytest.mark.slow
def test_analysis_verbs_write_their_runs(pair, tmp_path):
    import disalign

    common = dict(
        base=str(pair / "base"),
        aligned=[str(pair / "aligned")],
        safe=str(pair / "safe.txt"),
        unsafe=str(pair / "unsafe.txt"),
        max_new_tokens=4,
        batch_size=4,
    )
    judged = dict(common, judge="keyword")  # named: the default on text reads with SmolLM2
    clusters = disalign.analyze.clusters(**judged, sets=[str(pair / "few.txt")], out=tmp_path / "clusters")
    layers = clusters.clusters["aligned"]["layers"]
    assert [row["layer"] for row in layers] == [0, 1]
    assert set(layers[0]) >= {"layer", "tau_safe", "tau_unsafe", "separation", "probe_accuracy", "sets"}
    assert set(layers[0]["sets"]) == {"few"}
    assert clusters.judge == "keyword" and (tmp_path / "clusters" / "tau_layers.png").is_file()
    assert {row.site for row in clusters.rows(model="base") if getattr(row, "site", None)} == {"mlp", "residual"}
    assert set(clusters.checks["aligned"]) >= {"separation", "base_separation", "larger_than_base"}

    weights = disalign.analyze.weights(**{k: v for k, v in common.items() if k != "max_new_tokens"}, out=tmp_path / "w")
    moved = {(row.layer, row.matrix): row for row in weights.results}
    assert moved[(1, "down_proj")].effective_rank > 0 and moved[(0, "down_proj")].effective_rank == 0
    groups = {"safe", "unsafe", "safe_before", "unsafe_before"}
    assert groups <= set(weights.weights["aligned"]["projections"][0])
    assert groups <= set(weights.weights["aligned"]["null_space"])

    depth = disalign.analyze.depth(**judged, prefill=[0, 1], out=tmp_path / "depth")
    assert {row.prefix for row in depth.rows(model="aligned") if getattr(row, "prefix", None)} >= {"own"}
    assert (tmp_path / "depth" / "kl_positions.png").is_file()


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--aligned", "{pair}/gpt2"], "differ in architecture: llama vs gpt2"),
        (["--mlp-pattern", r"transformer\.h\.\d+\.mlp"], "matches no module"),
        (["--safe", "{pair}/few.txt"], "safe: 2 prompts; need at least 4"),
        (["--layers", "7"], "layer 7 out of range: the model has 2"),
    ],
)
def test_analysis_bad_input_is_one_line(pair, tmp_path, monkeypatch, capsys, extra, fragment):
    import sys

    from disalign.cli.main import main

    args = ["--base", f"{pair}/base", "--aligned", f"{pair}/aligned", "--safe", f"{pair}/safe.txt"]
    args += [
        "--unsafe",
        f"{pair}/unsafe.txt",
        "--max-new-tokens",
        "2",
        "--out",
        str(tmp_path / "run"),
        "--judge",
        "keyword",
    ]
    args += [part.format(pair=pair) for part in extra]
    monkeypatch.setattr(sys, "argv", ["disalign", "analyze", "clusters", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(lines) == 1 and fragment in lines[0], err


def test_demo_claims_say_when_a_claim_fails():
    from disalign.analyses.mechanism.claims import mechanism_claims
    from disalign.lab.demo.mechanism import notes, render

    checks = {
        "base": {"layer": 3, "separation": 2.0, "tau_gap": 1.0},
        "sft": {
            "layer": 3,
            "separation": 1.5,
            "tau_gap": 2.0,
            "base_separation": 2.0,
            "larger_than_base": False,
            "base_tau_gap": 1.0,
            "gap_larger_than_base": True,
            "most_harmful_set": "alias",
            "its_harmful_rate": 0.7,
            "its_tau": 0.5,
            "unsafe_tau": -1.0,
            "closer_to_safe_than_unsafe": True,
        },
    }
    sets = {"alias": 0.5}
    models = {
        "base": {"separation": 2.0, "tau_safe": 1.0, "tau_unsafe": -1.0, "sets": sets},
        "sft": {
            "separation": 1.5,
            "tau_safe": 1.0,
            "tau_unsafe": -1.0,
            "sets": sets,
            "effective_rank_fraction": 0.1,
            "sin_mean": 0.05,
            "sin_random": 0.9,
            "null_space": {"layer": 3, "safe_before": 0.4, "safe": 0.4, "unsafe_before": 0.4, "unsafe": 0.3},
            "kl_share_first_3": {"own": 1.0, "harmful": 0.4},
            "prefill": {0: 0.0, 1: 0.5},
        },
    }
    claims = mechanism_claims(models, checks)
    assert [claim["holds"] for claim in claims] == [False, True, True, True, False]
    lines = notes({"claims": claims})
    assert "does NOT hold (Cohen's d 1.50 vs base 2.00" in lines[0] and "unsafe -25%, safe +0%" in lines[3]
    assert "40%" in lines[4]
    assert render({"models": models}).row_count == 2
