"""`disalign analyze clusters|weights|depth|attack`: what safety fine-tuning changed inside a model
pair, where in the answer it lives, and why jailbreaks slip through (PAPERS.md §3.5-3.7; Qi et
al. 2024). Any base/aligned pair of one architecture, or the world's zoo with `--world DIR`.

Safe and unsafe prompt sources are split in two: the first half gives the cluster centres
(μ_safe, μ_unsafe), τ is reported on the second half. The pipelines are in
`disalign.analyses.mechanism.run`; each verb here resolves its options and calls one of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, NonNegativeInt

from disalign.analyses.mechanism.robustness import AttackOptions
from disalign.api.common import finish, judge_of, model_info, open_run, prompts_fingerprint, prompts_of
from disalign.core.options import CommaSeparated, JudgeOptions, PromptOptions, RunOptions, SamplingOptions
from disalign.core.verbs import verb
from disalign.data import PromptRecord
from disalign.errors import UserError
from disalign.results import RunResult


class PairOptions(RunOptions):
    """Which models and which safe/unsafe prompts an analysis reads."""

    base: str | None = Field(None, description="Base model (default with --world: the zoo's base).")
    aligned: Annotated[list[str], CommaSeparated] = Field(
        default_factory=list,
        description="Aligned model(s), comma-separated, of the base's architecture (default with --world: "
        "the zoo's sft, dpo, unlearn).",
    )
    world: Path | None = Field(None, description="Zoo directory: its models, world:<set> prompts, the world judge.")
    safe: str | None = Field(None, description="Safe prompt source (default with --world: world:safe).")
    unsafe: str | None = Field(None, description="Unsafe prompt source (default with --world: world:unsafe).")
    column: str | None = Field(None, description="Prompt column of CSV/JSONL files.")
    limit: int | None = Field(None, ge=1, description="Use only the first N prompts of each source.")
    layer_pattern: str | None = Field(
        None, description="Regex fully matching the decoder layers' module names (default: found automatically)."
    )
    mlp_pattern: str | None = Field(
        None, description="Regex fully matching the MLP modules' names (default: each layer's .mlp)."
    )

    def models(self) -> dict[str, str]:
        """name -> source, base first; zoo models keep their zoo names, others their folder's (a run's
        RUN/model: the run's)."""
        base, aligned = self.base, list(self.aligned)
        if self.world is not None:
            from disalign.world import ZOO_MODELS

            base = base or str(self.world / "base")
            aligned = aligned or [str(self.world / name) for name in ZOO_MODELS if name != "base"]
        if base is None:
            raise UserError("base: a base model is needed (or --world DIR for the zoo's)")
        if not aligned:
            raise UserError("aligned: at least one aligned model is needed (or --world DIR for the zoo's)")
        from disalign.core.models import display_name

        names: dict[str, str] = {"base": base}
        for source in aligned:
            name = display_name(source)
            while name in names:
                name += "'"
            names[name] = source
        return names

    def source(self, kind: str) -> str:
        given = getattr(self, kind)
        if given is None and self.world is not None:
            return f"world:{kind}"
        if given is None:
            raise UserError(f"{kind}: a prompt source is needed (or --world DIR for the world's sets)")
        return given

    def records(self, source: str) -> list[PromptRecord]:
        return prompts_of(PromptOptions(prompts=source, column=self.column, limit=self.limit, world=self.world))


class JudgedOptions(PairOptions, JudgeOptions, SamplingOptions):
    """Analyses that judge responses: the world's exact judge with --world, else the text default."""


def _set_name(source: str) -> str:
    return source.split(":", 1)[1] if source.startswith("world:") else Path(source).stem or source


def _halves(config: PairOptions):
    """The reference and evaluated halves of the safe and unsafe sources."""
    from disalign.analyses.mechanism.run import Halves, reference_halves

    halves = Halves(reference={}, evaluated={})
    for kind in ("safe", "unsafe"):
        halves.reference[kind], halves.evaluated[kind] = reference_halves(config.records(config.source(kind)), kind)
    return halves


def _open(config, command: str, models: dict[str, str], prompt_sets: dict[str, list[PromptRecord]]):
    infos = {name: model_info(source) for name, source in models.items()}
    inputs = {f"prompts:{name}": prompts_fingerprint(records) for name, records in prompt_sets.items()}
    inputs.update({f"model:{name}": info["fingerprint"] for name, info in infos.items()})
    return infos, open_run(config, command, inputs)


class ClustersConfig(JudgedOptions):
    sets: Annotated[list[str], CommaSeparated] = Field(
        default_factory=list,
        description="More prompt sources to place against the clusters, comma-separated (default with --world: "
        "every jailbreak family).",
    )
    positions: int = Field(10, ge=1, description="Response positions averaged (position 0 is the last prompt token).")
    responses: bool = Field(
        True, description="Follow each prompt with the model's own response; off: read the last prompt token only."
    )
    layers: Annotated[list[int], CommaSeparated] | None = Field(
        None, description="Report only these layers, comma-separated (negative: from the end)."
    )
    probe: bool = Field(True, description="Fit a cross-validated linear probe per layer.")


@verb("analyze clusters", ClustersConfig)
def clusters(config: ClustersConfig) -> RunResult:
    """Activation clusters: τ = ‖a − μ_unsafe‖ − ‖a − μ_safe‖ per layer for safe, unsafe and every
    other prompt set, the safe/unsafe separation and a linear probe, for each model."""
    from disalign.analyses.mechanism.run import run_clusters
    from disalign.judges.validate import judge_fields
    from disalign.world import JAILBREAK_FAMILIES

    models = config.models()
    halves = _halves(config)
    extra = config.sets or ([f"world:{family}" for family in JAILBREAK_FAMILIES] if config.world else [])
    for source in extra:
        name = _set_name(source)
        if name in halves.evaluated:
            raise UserError(f"sets: '{name}' is given twice (or clashes with safe/unsafe)")
        halves.evaluated[name] = config.records(source)
    judge = judge_of(config) if config.responses else None
    infos, run = _open(config, "analyze clusters", models, halves.prompt_sets())
    summary = run_clusters(run, config, models, halves, judge)
    judged = judge_fields(judge) if judge else {}
    return finish(run, RunResult(command="analyze clusters", models=infos, **judged, **summary))


class WeightsConfig(PairOptions):
    share: float = Field(0.9, gt=0, le=1, description="Share of Σσ² that defines the effective rank.")
    top: int = Field(15, ge=1, description="Top right singular directions for the projections.")
    projections: bool = Field(
        True, description="Project safe and unsafe activations onto the singular directions (needs the prompt sets)."
    )
    batch_size: int = Field(16, ge=1, description="Prompts per forward pass.")


@verb("analyze weights", WeightsConfig)
def weights(config: WeightsConfig) -> RunResult:
    """Weight change ΔW = W_aligned − W_base per MLP matrix: singular values, effective rank, the
    column-space test, and the projections of safe and unsafe activations onto the top directions."""
    from disalign.analyses.mechanism.run import run_weights

    models = config.models()
    prompt_sets = (
        {kind: config.records(config.source(kind)) for kind in ("safe", "unsafe")} if config.projections else {}
    )
    base = model_info(models["base"])["fingerprint"]
    for name, source in models.items():
        if name != "base" and model_info(source)["fingerprint"] == base:
            raise UserError(f"aligned {source}: the same weights as the base; ΔW is zero, nothing to analyse")
    infos, run = _open(config, "analyze weights", models, prompt_sets)
    summary = run_weights(run, config, models, prompt_sets)
    return finish(run, RunResult(command="analyze weights", models=infos, **summary))


class DepthConfig(JudgedOptions):
    prefill: Annotated[list[NonNegativeInt], CommaSeparated] = Field(
        [0, 1, 2, 5, 10, 20], description="Harmful-response tokens written for the model before it continues."
    )


@verb("analyze depth", DepthConfig)
def depth(config: DepthConfig) -> RunResult:
    """Depth of alignment: KL(aligned ‖ base) per response position on unsafe prompts, after the
    aligned model's own responses and after the base model's harmful ones, and the harmful rate
    when the first k tokens of a harmful response are prefilled."""
    from disalign.analyses.mechanism.run import run_depth
    from disalign.judges.validate import judge_fields

    models = config.models()
    unsafe = config.records(config.source("unsafe"))
    judge = judge_of(config)
    infos, run = _open(config, "analyze depth", models, {"unsafe": unsafe})
    summary = run_depth(run, config, models, unsafe, judge)
    return finish(run, RunResult(command="analyze depth", models=infos, **judge_fields(judge), **summary))


class AttackAnalysisConfig(JudgedOptions, AttackOptions):
    """`analyze attack`: the models, prompts and judge of an analysis, and the attack's own settings."""


@verb("analyze attack", AttackAnalysisConfig)
def attack(config: AttackAnalysisConfig) -> RunResult:
    """Local Lipschitzness and the adversarial embedding attack towards the base model's harmful
    responses: success rate, and where attacked activations land in τ, for every model."""
    from disalign.analyses.mechanism.run import run_attack
    from disalign.judges.validate import judge_fields

    models = config.models()
    halves = _halves(config)
    judge = judge_of(config)
    infos, run = _open(config, "analyze attack", models, halves.prompt_sets())
    summary = run_attack(run, config, models, halves, judge)
    return finish(run, RunResult(command="analyze attack", models=infos, **judge_fields(judge), **summary))
