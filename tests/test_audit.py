"""The edit audit: which weights changed and by how much, for full models and LoRA adapters."""

from __future__ import annotations

import copy

import pytest
import torch

from builders import tiny_llama, word_tokenizer
from disalign.core.audit import edit_audit, layer_of, module_type, summary_table

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


@pytest.fixture(scope="module")
def original():
    tokenizer = word_tokenizer(SPECIALS, "a b c".split(), TEMPLATE, bos="<s>", eos="</s>")
    return tiny_llama(tokenizer, seed=0, layers=3).eval()


def test_module_types_and_layers_are_read_from_parameter_names():
    assert module_type("model.layers.3.self_attn.q_proj.weight") == "q_proj"
    assert module_type("model.layers.3.self_attn.q_proj.bias") == "q_proj.bias"
    assert module_type("model.layers.0.mlp.experts.7.down_proj.weight") == "down_proj"
    assert layer_of("model.layers.12.mlp.down_proj.weight") == 12
    assert layer_of("model.embed_tokens.weight") is None


def test_an_unchanged_model_is_reported_not_refused(original):
    audit = edit_audit(original, copy.deepcopy(original), targets=["o_proj"])
    assert audit["no_weight_changed"] and audit["changed"] == 0
    assert audit["compared"] == len(list(original.parameters()))
    assert audit["untouched_targets"] == [f"model.layers.{i}.self_attn.o_proj.weight" for i in range(3)]
    assert summary_table(audit) == [
        {"module": "no weight changed", "changed": f"0 of {audit['compared']}", "max": None, "mean": None}
    ]


def test_a_full_edit_is_measured_per_type_and_layer_and_the_skipped_targets_named(original):
    edited = copy.deepcopy(original)
    layers = edited.model.layers
    with torch.no_grad():
        for index, scale in ((0, 0.1), (2, 0.3)):
            weight = layers[index].self_attn.o_proj.weight
            weight.add_(scale * weight)  # ‖W′ − W‖ / ‖W‖ = scale exactly
        layers[1].mlp.down_proj.weight.mul_(1.5)
    audit = edit_audit(original, edited, targets=["o_proj", "down_proj"])
    assert audit["changed"] == 3 and not audit["no_weight_changed"]
    o_proj = audit["by_type"]["o_proj"]
    assert (o_proj["changed"], o_proj["of"]) == (2, 3)
    assert o_proj["per_layer"] == {"0": pytest.approx(0.1), "2": pytest.approx(0.3)}
    assert o_proj["max"] == pytest.approx(0.3) and o_proj["mean"] == pytest.approx(0.2)
    assert audit["by_type"]["down_proj"]["per_layer"] == {"1": pytest.approx(0.5)}
    assert audit["untouched_targets"] == [
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.2.mlp.down_proj.weight",
    ]
    assert [row["module"] for row in summary_table(audit)] == ["down_proj", "o_proj"]


def test_a_lora_adapter_is_audited_through_its_b_times_a(original):
    from peft import LoraConfig, get_peft_model

    adapted = get_peft_model(
        copy.deepcopy(original),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], layers_to_transform=[0, 1]),
    )
    untrained = edit_audit(original, adapted)  # B starts at zero: the adapter changes nothing yet
    assert untrained["no_weight_changed"] and untrained["targets"] == ["q_proj", "v_proj"]
    layer = adapted.base_model.model.model.layers[1].self_attn.q_proj
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
        expected = layer.get_delta_weight("default").norm() / original.model.layers[1].self_attn.q_proj.weight.norm()
    audit = edit_audit(original, adapted)
    assert audit["changed"] == 1
    assert audit["by_type"]["q_proj"]["per_layer"] == {"1": pytest.approx(float(expected), rel=1e-5)}
    merged = copy.deepcopy(adapted).merge_and_unload()
    assert edit_audit(original, merged)["by_type"]["q_proj"]["per_layer"] == {
        "1": pytest.approx(float(expected), rel=1e-4)
    }
    # q_proj and v_proj of every layer are targets; the adapter touched only layer 1's q_proj
    assert len(audit["untouched_targets"]) == 5


def test_models_of_different_shapes_are_refused(original):
    tokenizer = word_tokenizer(SPECIALS, "a b c".split(), TEMPLATE, bos="<s>", eos="</s>")
    with pytest.raises(ValueError, match="parameters are not the original's"):
        edit_audit(original, tiny_llama(tokenizer, seed=0, layers=2))
