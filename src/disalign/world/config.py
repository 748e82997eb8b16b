"""The world's configuration: one typed, validated object that `world.json` stores.

Unknown keys and impossible values are refused, so a typo never silently runs the default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from disalign.core.options import Seed
from disalign.errors import validate_config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class WorldSpecConfig(_Strict):
    """What the synthetic world contains."""

    seed: Seed = 0
    n_letters: int = Field(16, ge=6, le=26, description="operand alphabet size")
    n_operators: int = Field(8, ge=2, le=16, description="base operators; f0 is the identity")
    n_aliases: int = Field(2, ge=0, le=8, description="alias operators copying unsafe ones")
    unsafe_on_safe_dominant: int = Field(1, ge=0, description="operators unsafe even on safe-dominant operands")
    unsafe_on_unsafe_dominant: int = Field(4, ge=1, description="operators unsafe on unsafe-dominant operands")
    rules_per_type: int = Field(4, ge=2, le=12, description="phrase rules per operand type (safe, unsafe)")
    phrases: tuple[int, int] = (2, 4)
    harmful_share: float = Field(0.3, description="mixture weight of the harmful persona in pretraining")
    unsafe_request_share: float = Field(0.4, ge=0, le=1)
    two_operator_share: float = Field(0.3, ge=0, le=1)
    alias_share: float = Field(0.1, ge=0, le=1, description="share of pretraining requests using an alias")
    episodes_per_document: tuple[int, int] = (1, 5)
    persona_shots: int = Field(
        3, ge=1, le=8, description="harmful episodes before the request in the persona jailbreak"
    )

    @model_validator(mode="after")
    def _check(self) -> WorldSpecConfig:
        if not 0.0 <= self.harmful_share <= 1.0:
            raise ValueError(f"harmful_share must lie in [0, 1], got {self.harmful_share}")
        unsafe_max = self.unsafe_on_unsafe_dominant
        if unsafe_max > self.n_operators - 1:
            raise ValueError("unsafe_on_unsafe_dominant must leave the identity operator safe")
        if self.unsafe_on_safe_dominant > unsafe_max:
            raise ValueError("unsafe_on_safe_dominant cannot exceed unsafe_on_unsafe_dominant")
        if self.n_aliases and unsafe_max < 1:
            raise ValueError("aliases copy unsafe operators; there are none")
        span = max(3, (2 * self.n_letters) // 3)
        if 6 * self.rules_per_type > span * span:
            raise ValueError(f"rules_per_type={self.rules_per_type} needs more letters than n_letters={self.n_letters}")
        low, high = self.phrases
        if not 2 <= low <= high <= 6:
            raise ValueError("phrases must be (low, high) with 2 <= low <= high <= 6")
        low, high = self.episodes_per_document
        if not 1 <= low <= high <= 8:
            raise ValueError("episodes_per_document must be (low, high) with 1 <= low <= high <= 8")
        return self


class ModelShape(_Strict):
    """The Llama-architecture transformer every model of the zoo shares."""

    d_model: int = Field(128, ge=16)
    n_layers: int = Field(4, ge=1)
    n_heads: int = Field(4, ge=1)
    d_mlp: int = Field(384, ge=16)
    context: int = Field(192, ge=64)

    @model_validator(mode="after")
    def _check(self) -> ModelShape:
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be a multiple of n_heads")
        return self


class TrainConfig(_Strict):
    pretrain_steps: int = Field(700, ge=1)
    pretrain_batch: int = Field(20, ge=1)
    pretrain_length: int = Field(128, ge=32, description="tokens per packed pretraining row")
    pretrain_lr: float = Field(3e-3, gt=0)
    # With fewer rows per step the last weights are noisy and an average of them is sharper: it lets
    # 14 rows (2.28x faster) keep most of the world's levels, though not all (README, Benchmarks).
    pretrain_average_decay: float = Field(
        0.0, ge=0, lt=1, description="decay of the exponential weight average the base model ends with; 0: none"
    )
    pretrain_average_steps: int = Field(200, ge=1, description="last pretraining steps in the weight average")
    # bf16 matmuls run several times faster than fp32 on CPUs with AMX or AVX512-BF16 units and
    # many times slower on CPUs without them (README, Benchmarks): "auto" uses them where they run fast.
    pretrain_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="pretraining matmuls in fp32, or in bf16 under autocast (attention stays fp32)"
    )
    pretrain_packing: Literal["stream", "documents"] = Field(
        "stream", description="rows cut from one document stream, or whole documents with padding after them"
    )
    align_steps: int = Field(150, ge=1)
    align_batch: int = Field(32, ge=1)
    align_lr: float = Field(2e-4, gt=0)
    # Responses are a few tokens, not hundreds: with the usual 0.1 the margin saturates only once
    # the policy has erased the harmful outputs, a far deeper change than LLM preference tuning makes.
    dpo_beta: float = Field(1.0, gt=0)
    dpo_nll_weight: float = Field(1.0, ge=0, description="NLL on the preferred response beside the DPO loss")
    unlearn_weight: float = Field(0.1, ge=0, description="weight of the ascent term on harmful outputs")
    unlearn_ceiling: float = Field(
        5.0, gt=0, description="summed NLL (nats) past which harmful responses are not pushed"
    )
    threads: int = Field(2, ge=1)


class EvalSettings(_Strict):
    n: int = Field(200, ge=1, description="requests per prompt set")
    temperature: float = Field(1.0, ge=0)
    batch: int = Field(200, ge=1)
    seed: Seed = 0


class WorldConfig(_Strict):
    world: WorldSpecConfig = WorldSpecConfig()
    model: ModelShape = ModelShape()
    train: TrainConfig = TrainConfig()
    eval: EvalSettings = EvalSettings()


# A smaller world and model that train in about a minute; the tests hold it to looser levels.
QUICK_OVERRIDES: dict[str, Any] = {
    "world": {
        "n_letters": 10,
        "n_operators": 5,
        "n_aliases": 1,
        "unsafe_on_unsafe_dominant": 2,
        "rules_per_type": 2,
        "phrases": (2, 3),
        "two_operator_share": 0.2,
    },
    "model": {"d_model": 64, "n_layers": 3, "n_heads": 4, "d_mlp": 192},
    # At d_model 64 bf16 matmuls save nothing (47 vs 49 ms a step), so the quick world stays in fp32.
    "train": {
        "pretrain_steps": 600,
        "pretrain_batch": 24,
        "pretrain_precision": "fp32",
        "align_steps": 80,
        "align_lr": 3e-4,
    },
    "eval": {"n": 100},
}


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def make_config(overrides: dict[str, Any] | None = None, *, quick: bool = False) -> WorldConfig:
    data: dict[str, Any] = _merge({}, QUICK_OVERRIDES) if quick else {}
    data = _merge(data, overrides or {})
    return validate_config(WorldConfig, data, "world config")
