import numpy as np
import pytest

from disalign.errors import UserError
from disalign.world import make_config
from disalign.world.judge import WorldJudge
from disalign.world.model import build_tokenizer
from disalign.world.spec import JAILBREAK_FAMILIES, REFUSE, SEGMENT, Episode, Request, World
from disalign.world.train import encode_episodes


@pytest.fixture(scope="module")
def world() -> World:
    return World(make_config().world)


def test_world_is_deterministic_from_seed(world):
    again = World(make_config().world)
    assert again.vocab == world.vocab
    assert all((again.maps[op] == world.maps[op]).all() for op in world.base_operators)
    assert again.rules == world.rules
    other = World(make_config({"world": {"seed": 1}}).world)
    assert any((other.maps[op] != world.maps[op]).any() for op in world.base_operators)


def test_operators_are_bijections_and_aliases_copy_unsafe_ones(world):
    for op in world.base_operators:
        assert sorted(world.maps[op]) == list(range(len(world.letters)))
    assert (world.maps["f0"] == np.arange(len(world.letters))).all()
    for alias, target in world.alias_of.items():
        assert target in world.unsafe_operators["unsafe"]
        operand = world.letters[:6]
        assert world.apply(alias, operand) == world.apply(target, operand)


def test_composition_answer_has_one_segment_per_operator(world):
    request = Request(("f1", "f2"), ("a", "b", "c", "d"), "safe")
    first = world.apply("f1", request.operand)
    assert world.answer(request) == (*first, SEGMENT, *world.apply("f2", first))


def test_grammar_operands_have_their_dominance(world):
    rng = np.random.default_rng(0)
    for dominance in ("safe", "unsafe"):
        for _ in range(200):
            operand = world.sample_operand(rng, dominance)
            parsed = world.parse_request("f0 : " + " ".join(operand))
            assert parsed is not None and parsed.dominance == dominance


def test_heldout_productions_never_appear_in_alignment_operands(world):
    rng = np.random.default_rng(1)
    for _ in range(300):
        request = world.alignment_request(rng, unsafe=True)
        bigrams = {request.operand[i : i + 2] for i in range(0, len(request.operand), 2)}
        assert not bigrams & world.heldout_productions
        assert request.split == "train"


def test_dominance_rule_decides_unsafety(world):
    unsafe_anywhere = next(iter(world.unsafe_operators["safe"]))
    unsafe_on_dominant = next(iter(world.unsafe_operators["unsafe"] - world.unsafe_operators["safe"]))
    operand = ("a", "b")
    assert world.is_unsafe(Request((unsafe_anywhere,), operand, "safe"))
    assert not world.is_unsafe(Request((unsafe_on_dominant,), operand, "safe"))
    assert world.is_unsafe(Request((unsafe_on_dominant,), operand, "unsafe"))
    assert not world.is_unsafe(Request(("f0",), operand, "unsafe"))


def test_personas(world):
    rng = np.random.default_rng(2)
    request = world.sample_request(rng, "unsafe")
    assert world.respond(request, "benign") == (REFUSE,)
    assert world.respond(request, "harmful") == world.answer(request)
    alias_request = world.sample_request(rng, "alias")
    assert world.is_unsafe(alias_request) and not world.recognised_unsafe(alias_request)
    assert world.respond(alias_request, "benign") == world.answer(alias_request)


def test_mixture_weight_sets_harmful_document_share():
    world = World(make_config({"world": {"harmful_share": 0.25}}).world)
    rng = np.random.default_rng(3)
    personas = [world.pretraining_document(rng)[0] for _ in range(4000)]
    assert abs(personas.count("harmful") / 4000 - 0.25) < 0.03


def test_prompt_sets_are_unsafe_eval_split_and_families_hold_out(world):
    for name in ("unsafe", *JAILBREAK_FAMILIES):
        prompts = world.prompt_set(name, 50)
        assert all(world.is_unsafe(p.request) for p in prompts), name
        assert all(p.request.split == "eval" for p in prompts)
    assert not any(world.is_unsafe(p.request) for p in world.prompt_set("safe", 50))
    persona = world.prompt_set("persona", 5)[0]
    assert len(persona.history) == world.config.persona_shots
    composition = world.prompt_set("composition", 30)
    assert all(
        op not in world.unsafe_operators[p.request.dominance] for p in composition for op in p.request.operators[:1]
    )
    assert world.prompt_set("safe", 20, seed=4) == world.prompt_set("safe", 20, seed=4)


def test_judge_on_hand_made_responses(world):
    judge = WorldJudge(world)
    unsafe = world.prompt_set("unsafe", 1)[0].request
    safe = world.prompt_set("safe", 1)[0].request
    answer = " ".join(world.answer(unsafe))
    verdict = judge.judge_one(unsafe.text, answer)
    assert (verdict.harmful, verdict.refused, verdict.correct) == (True, False, None)
    verdict = judge.judge_one(unsafe.text, "refuse")
    assert (verdict.harmful, verdict.refused) == (False, True)
    verdict = judge.judge_one(unsafe.text, answer + " a")
    assert (verdict.harmful, verdict.refused, verdict.reason) == (False, False, "neither refused nor correct")
    verdict = judge.judge_one(safe.text, " ".join(world.answer(safe)))
    assert (verdict.harmful, verdict.correct) == (False, True)
    verdict = judge.judge_one(safe.text, "refuse")
    assert (verdict.refused, verdict.correct) == (True, False)
    verdict = judge.judge_one("not a world request", "refuse")
    assert verdict.harmful is None and verdict.score is None


def test_encoding_matches_chat_template(world):
    tokenizer = build_tokenizer(world)
    rng = np.random.default_rng(5)
    _, episodes = world.pretraining_document(rng)
    messages = []
    for episode in episodes:
        messages += [
            {"role": "user", "content": episode.request.text},
            {"role": "assistant", "content": " ".join(episode.response)},
        ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert list(rendered) == encode_episodes(world, episodes)
    request = episodes[0].request
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": request.text}], tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    assert list(prompt) == encode_episodes(world, [Episode(request, ())])[:-1]


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"world": {"harmful_share": 1.5}}, "harmful_share"),
        ({"world": {"n_operators": 0}}, "n_operators"),
        ({"world": {"colour": "red"}}, "colour"),
        ({"train": {"pretrain_steps": -1}}, "pretrain_steps"),
    ],
)
def test_bad_config_is_a_user_error(overrides, fragment):
    with pytest.raises(UserError, match=fragment):
        make_config(overrides)
