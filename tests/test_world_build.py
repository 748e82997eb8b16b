"""Zoo builds: deterministic for a seed and thread count, reused only by the config and version that built them."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from disalign.errors import UserError
from disalign.world import ZOO_MODELS, World, build_zoo, make_config
from disalign.world.spec import BOS, EOS, PAD, SPECIAL_TOKENS
from disalign.world.train import _document_stream, _stream_batch, encode_episodes

# A few seconds to build: enough steps for every training path to run, too few to learn anything.
TINY = {"train": {"pretrain_steps": 12, "pretrain_batch": 8, "align_steps": 3, "align_batch": 8, "threads": 2}}


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    zoo = tmp_path_factory.mktemp("tiny") / "zoo"
    build_zoo(zoo, make_config(TINY, quick=True))
    return zoo


def _weights(zoo):
    return {name: load_file(zoo / name / "model.safetensors") for name in ZOO_MODELS}


def _stamps(zoo):
    return {name: (zoo / name / "model.safetensors").stat().st_mtime_ns for name in ZOO_MODELS}


def test_same_seed_same_threads_same_weights(tiny_zoo, tmp_path):
    again = tmp_path / "again"
    build_zoo(again, make_config(TINY, quick=True))
    first, second = _weights(tiny_zoo), _weights(again)
    for name in ZOO_MODELS:
        assert first[name].keys() == second[name].keys()
        for key in first[name]:
            assert torch.equal(first[name][key], second[name][key]), f"{name}.{key}"


def test_world_json_records_config_hash_and_version(tiny_zoo):
    import disalign

    world = json.loads((tiny_zoo / "world.json").read_text())
    assert world["disalign_version"] == disalign.__version__
    assert len(world["config_hash"]) == 16
    other = json.loads(json.dumps(make_config({**TINY, "world": {"seed": 1}}, quick=True).model_dump()))
    assert world["config"] != other


def test_same_config_reuses_every_model(tiny_zoo):
    stamps = _stamps(tiny_zoo)
    build_zoo(tiny_zoo, make_config(TINY, quick=True))
    assert _stamps(tiny_zoo) == stamps


def test_changed_config_stops_naming_the_difference_and_rebuild_replaces_it(tiny_zoo, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    # One thread: a rebuild that also runs quickly on a busy machine.
    changed = make_config({"train": {**TINY["train"], "threads": 1}}, quick=True)
    with pytest.raises(UserError, match=r"train\.threads 2 -> 1.*--rebuild") as error:
        build_zoo(zoo, changed)
    assert "\n" not in str(error.value)
    kept, original = _weights(zoo), _weights(tiny_zoo)
    assert all(torch.equal(kept[name][key], original[name][key]) for name in ZOO_MODELS for key in original[name])

    stamps = _stamps(zoo)
    build_zoo(zoo, changed, rebuild=True)
    assert json.loads((zoo / "world.json").read_text())["config"]["train"]["threads"] == 1
    assert json.loads((zoo / "config.json").read_text())["config"]["train"]["threads"] == 1
    assert all(after > before for after, before in zip(_stamps(zoo).values(), stamps.values(), strict=True))


def test_zoo_of_another_version_stops(tiny_zoo, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    world = json.loads((zoo / "world.json").read_text())
    world["disalign_version"] = "0.0.1"
    (zoo / "world.json").write_text(json.dumps(world))
    with pytest.raises(UserError, match=r"disalign 0\.0\.1, not .*--rebuild"):
        build_zoo(zoo, make_config(TINY, quick=True))


def test_directory_that_is_not_a_zoo_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a world zoo"):
        build_zoo(tmp_path, make_config(TINY, quick=True), rebuild=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_stream_packing_has_no_padding_and_keeps_documents_in_order():
    world = World(make_config(quick=True).world)
    batch = _stream_batch(_document_stream(world, np.random.default_rng(0)), rows=4, length=64)
    assert batch.shape == (4, 64)
    assert not (batch == world.token_id[PAD]).any()
    rng = np.random.default_rng(0)
    expected: list[int] = []
    while len(expected) < batch.numel():
        expected += encode_episodes(world, world.pretraining_document(rng)[1]) + [world.token_id[EOS]]
    assert batch.flatten().tolist() == expected[: batch.numel()]
    assert batch[0, 0] == world.token_id[BOS]


def test_pretraining_ends_with_the_exponential_average_of_its_last_weights(monkeypatch):
    from disalign.world import train
    from disalign.world.model import build_model

    config = make_config(
        {
            "train": {
                "pretrain_steps": 5,
                "pretrain_batch": 2,
                "pretrain_average_decay": 0.5,
                "pretrain_average_steps": 3,
            }
        },
        quick=True,
    )
    world = World(config.world)
    model = build_model(world, config.model, seed=0)
    after_each_step = []
    plain_step = train._step

    def recording_step(optimizer, model, loss, lr):
        plain_step(optimizer, model, loss, lr)
        after_each_step.append({k: v.detach().clone() for k, v in model.named_parameters()})

    monkeypatch.setattr(train, "_step", recording_step)
    train.pretrain(model, world, config.train, seed=0)
    *_, w2, w3, w4 = after_each_step  # the average starts from the weights of step 2 of 0..4
    for name, weight in model.named_parameters():
        expected = 0.5 * (0.5 * w2[name] + 0.5 * w3[name]) + 0.5 * w4[name]
        torch.testing.assert_close(weight.detach(), expected)
    assert not torch.equal(model.model.embed_tokens.weight, w4["model.embed_tokens.weight"])


def test_attention_kept_in_fp32_computes_what_sdpa_computes():
    from disalign.world.model import build_model
    from disalign.world.train import FP32_ATTENTION

    config = make_config(quick=True)
    world = World(config.world)
    model = build_model(world, config.model, seed=0).eval()
    ids = torch.randint(len(SPECIAL_TOKENS), len(world.vocab), (3, 40))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        model.set_attn_implementation(FP32_ATTENTION)
        torch.testing.assert_close(model(input_ids=ids).logits, expected)


def test_bf16_pretraining_multiplies_in_bf16_and_gives_back_an_fp32_sdpa_model():
    from disalign.world import train
    from disalign.world.model import build_model

    config = make_config(
        {"train": {"pretrain_steps": 2, "pretrain_batch": 2, "pretrain_precision": "bf16"}}, quick=True
    )
    world = World(config.world)
    model = build_model(world, config.model, seed=0)
    seen = []
    layer = model.model.layers[0]
    layer.mlp.down_proj.register_forward_hook(lambda module, args, out: seen.append(("mlp", out.dtype)))
    layer.self_attn.o_proj.register_forward_pre_hook(lambda module, args: seen.append(("attention", args[0].dtype)))
    stats = train.pretrain(model, world, config.train, seed=0)
    assert seen == [("attention", torch.float32), ("mlp", torch.bfloat16)] * 2
    assert model.config._attn_implementation == "sdpa"
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert stats.precision == "bf16" and math.isfinite(stats.final_loss)


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"), [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")]
)
def test_auto_precision_is_bf16_only_where_the_cpu_multiplies_it_natively(monkeypatch, amx, avx512_bf16, expected):
    from disalign.world.train import resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert resolve_precision("auto") == expected
    assert resolve_precision("fp32") == "fp32"
