"""Scale-out backends: vLLM generation against a fake engine with vLLM's interface, and fine-tuning
through `accelerate launch` (two CPU processes standing in for two GPUs)."""

import json
import sys
import types
from dataclasses import dataclass, field

import pytest
import torch

from builders import tiny_llama, word_tokenizer
from disalign.backends import BackendOptions, backend_responder
from disalign.backends import vllm as vllm_backend
from disalign.core.evaluate import generate_and_judge
from disalign.core.generation import SamplingConfig, generate, render_chat
from disalign.core.runs import RunDir
from disalign.data import PromptRecord
from disalign.errors import UserError

torch.set_num_threads(1)

WORDS = "do x y z a b c d e f g h ok no refuse sys".split()
SPECIALS = ["<pad>", "<bos>", "<eos>", "<user>", "<asst>", "<end>", "<unk>", "<sys>"]
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}<sys> {{ m['content'] }} "
    "{% elif m['role'] == 'user' %}<user> {{ m['content'] }} <asst>"
    "{% else %} {% generation %}{{ m['content'] }} <end>{% endgeneration %}{% endif %}"
    "{% endfor %}"
)


def make_tokenizer():
    return word_tokenizer(
        SPECIALS, WORDS, TEMPLATE, bos="<bos>", eos="<eos>", extra=["<user>", "<asst>", "<end>", "<sys>"]
    )


# ---------------------------------------------------------------- a fake vLLM


@dataclass
class SamplingParams:  # the fields of vllm.SamplingParams that the backend sets
    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    skip_special_tokens: bool = True


@dataclass
class FakeLLM:
    """`vllm.LLM`'s generate(prompts, sampling_params, use_tqdm=) -> [RequestOutput], answering each
    prompt with its own token count and seed, so tests can see what reached the engine."""

    model: str = ""
    seed: int = 0
    options: dict = field(default_factory=dict)
    calls: list = field(default_factory=list)
    reply: str | None = None  # what every prompt gets, where a test needs a given answer

    def __init__(self, model, seed=0, **options):
        self.model, self.seed, self.options, self.calls = model, seed, options, []
        self.tokenizer = make_tokenizer()

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params, *, use_tqdm=True):
        self.calls.append((prompts, sampling_params))
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        texts = [self.reply or f" {len(p['prompt_token_ids'])} {s.seed} " for p, s in zip(prompts, params, strict=True)]
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=text)]) for text in texts]


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = FakeLLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    tokenizer = make_tokenizer()
    end = tokenizer.convert_tokens_to_ids("<end>")
    tiny_llama(tokenizer, 0, max_position_embeddings=64, eos_token_id=[end, tokenizer.eos_token_id]).save_pretrained(
        path, safe_serialization=True
    )
    tokenizer.save_pretrained(path)
    return path


def records(n):
    return [PromptRecord(id=f"p{i}", prompt=f"do {'abcdefgh'[i % 8]} x", category="c", source="test") for i in range(n)]


def test_generate_sends_token_ids_and_a_seed_per_prompt(fake_vllm, tiny_model):
    engine = vllm_backend.load_engine(str(tiny_model), tensor_parallel_size=2)
    assert engine.model == str(tiny_model) and engine.options == {"tensor_parallel_size": 2}
    sampling = SamplingConfig(max_new_tokens=7, temperature=0.0, top_p=0.9, top_k=0, seed=100)
    rendered = render_chat(engine.get_tokenizer(), [[{"role": "user", "content": "do a x"}]] * 2)
    assert vllm_backend.generate(engine, rendered, sampling) == ["6 100", "6 101"]
    prompts, params = engine.calls[0]
    tokenizer = make_tokenizer()
    # The chat template's own BOS, and no second one: the same ids the transformers path feeds.
    assert prompts[0]["prompt_token_ids"] == tokenizer(rendered[0], add_special_tokens=False)["input_ids"]
    assert prompts[0]["prompt_token_ids"].count(tokenizer.bos_token_id) == 1
    assert params[0] == SamplingParams(max_tokens=7, temperature=0.0, top_p=0.9, top_k=-1, seed=100)


def test_vllm_responder_runs_the_shared_generate_and_judge_path(fake_vllm, tiny_model, tmp_path):
    from disalign.judges import get_judge

    sampling = SamplingConfig(max_new_tokens=4, batch_size=2, seed=3)
    respond = backend_responder("vllm", str(tiny_model), sampling)
    run = RunDir(tmp_path / "run", "eval", {})
    done = generate_and_judge(run, records(3), respond, get_judge("keyword"), batch_size=2, seed=3, key=lambda p: p.id)
    # Batch seeds as for transformers (seed*1_000_003 + start), then one per prompt within the batch.
    first, second = 3 * 1_000_003, 3 * 1_000_003 + 2
    assert [r["response"] for r in done] == [f"6 {first}", f"6 {first + 1}", f"6 {second}"]
    assert all(r["judge"] == "keyword" for r in done)


def test_transformers_backend_is_the_default_and_matches_core_generation(tiny_model):
    assert BackendOptions().backend == "transformers"
    sampling = SamplingConfig(max_new_tokens=5, temperature=0.0, batch_size=4)
    respond = backend_responder("transformers", str(tiny_model), sampling)
    from disalign.core.models import load_model

    model, tokenizer = load_model(tiny_model)
    rendered = render_chat(tokenizer, [[{"role": "user", "content": r.prompt}] for r in records(2)])
    assert respond(records(2), 0) == generate(model, tokenizer, rendered, sampling)


def test_vllm_absent_is_one_line(monkeypatch, tiny_model):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(UserError, match=r"backend vllm: vLLM is not installed") as caught:
        backend_responder("vllm", str(tiny_model), SamplingConfig())
    assert "\n" not in str(caught.value)
    with pytest.raises(Exception, match="backend"):
        BackendOptions(backend="tgi")


def test_vllm_refuses_adapters(fake_vllm, tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model

    from disalign.core.models import load_model

    adapter = tmp_path / "adapter"
    model, _ = load_model(tiny_model)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    (adapter / "base_model.txt").write_text(str(tiny_model))
    with pytest.raises(UserError, match="is a LoRA adapter; merge it"):
        vllm_backend.load_engine(str(adapter))


# ---------------------------------------------------------------- accelerate launch


def examples(n):
    return [
        {
            "messages": [
                {"role": "user", "content": f"do {'abcdefgh'[i % 8]} x"},
                {"role": "assistant", "content": f"ok {'abcdefgh'[i % 8]} y z"},
            ]
        }
        for i in range(n)
    ]


@pytest.mark.slow
def test_accelerate_launch_trains_one_cell_in_two_processes(tiny_model, tmp_path):
    from disalign.attacks.finetune import AttackConfig, load_finetuned
    from disalign.backends.multi_gpu import CONFIGS, launcher

    config = AttackConfig(epochs=2, lr=1e-2, batch_size=4, max_length=32, seed=1)
    result = launcher(CONFIGS / "multi-cpu.yaml")(tiny_model, examples(8), config, tmp_path / "cell")
    # 8 examples, a total batch of 4 split over 2 processes: 2 steps per epoch (4 if each trained alone).
    assert len(result.losses) == 4 and result.n_examples == 8
    assert json.loads((tmp_path / "cell" / "result.json").read_text())["losses"] == result.losses
    trained, tokenizer = load_finetuned(result.model_dir)
    original, _ = load_finetuned(tiny_model)
    ids = tokenizer.apply_chat_template(examples(1)[0]["messages"], return_dict=True, return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(trained(**ids).logits, original(**ids).logits)


def test_accelerate_config_errors(tmp_path):
    from disalign.attacks.finetune import AttackConfig
    from disalign.backends.multi_gpu import CONFIGS, launcher

    with pytest.raises(UserError, match="accelerate config not found .*multi-gpu.yaml"):
        launcher(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="batch size 5 does not split over 2 processes"):
        launcher(CONFIGS / "multi-cpu.yaml")("m", examples(2), AttackConfig(batch_size=5), tmp_path)


def test_eval_verb_generates_on_the_chosen_backend(fake_vllm, tiny_model, tmp_path):
    import disalign

    (tmp_path / "prompts.txt").write_text("do a x\ndo b x\n")
    options = dict(
        model=str(tiny_model), prompts=str(tmp_path / "prompts.txt"), max_new_tokens=3, seed=5, judge="keyword"
    )
    result = disalign.eval(**options, backend="vllm", out=tmp_path / "run")
    responses = [json.loads(line)["response"] for line in (tmp_path / "run" / "records.jsonl").open()]
    assert responses == [f"6 {5 * 1_000_003}", f"6 {5 * 1_000_003 + 1}"] and result.n == 2
    with pytest.raises(UserError, match="backend"):
        disalign.eval(**options, backend="tgi")


def test_finetune_verb_takes_an_accelerate_config(tiny_model, tmp_path):
    import disalign

    with pytest.raises(UserError, match="accelerate config not found"):
        disalign.finetune(
            model=str(tiny_model),
            recipe="harmful",
            data=tmp_path / "d.jsonl",
            prompts="x",
            accelerate_config=tmp_path / "missing.yaml",
        )


def test_classifier_judge_on_vllm(fake_vllm, tiny_model):
    from disalign.judges import get_judge

    judge = get_judge("classifier", model=str(tiny_model), format="harmbench", backend="vllm")
    judge.model.reply = " yes"
    verdicts = judge.judge(["do a x", "do b x"], ["ok a y z", "no"])
    assert [v.harmful for v in verdicts] == [True, True]
    prompts, params = judge.model.calls[0]
    assert params[0].temperature == 0.0 and params[0].max_tokens == 1  # greedy, the verdict word only
    assert len(prompts) == 2
    with pytest.raises(UserError, match="unknown backend 'tgi'"):
        get_judge("classifier", model=str(tiny_model), backend="tgi")
