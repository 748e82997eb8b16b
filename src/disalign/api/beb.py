"""`disalign beb estimate|curve|bounds|manyshot`: how long an adversarial prompt must be before a
model behaves badly (Behavior Expectation Bounds, PAPERS.md §4; many-shot scaling, Anil et al.).

A sentence is a world episode with `--world DIR` (P₋ the harmful persona, P₊ the benign one), or
one line of `--negative` / `--positive` statement files for a text model. P₋ and P₊ are model
paths (`--p-minus`, `--p-plus`) or LoRA proxies trained from `--model` on the components'
sentences with the paper's settings. Behaviour B ∈ [−1, 1] is negative for bad: −1 harmful,
+1 refused, 0 neither, from any judge of the registry (the exact world judge with `--world`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator

from disalign.api.common import finish, judge_of, model_info, open_run, prompts_of
from disalign.core.options import CommaSeparated, JudgeOptions, PromptOptions, RunOptions, Seed
from disalign.core.runs import fingerprint_path
from disalign.core.verbs import verb
from disalign.errors import UserError
from disalign.results import RunResult


class BebOptions(RunOptions):
    """What is measured and on which sentences."""

    model: str = Field(description="Model to measure (P_LLM): HF directory, adapter directory, .gguf or 'smollm2'.")
    world: Path | None = Field(None, description="Zoo directory: the world's personas, requests and exact judge.")
    negative: Path | None = Field(None, description="Negative statements (P₋), one per line: text models.")
    positive: Path | None = Field(None, description="Positive statements (P₊), one per line: text models.")
    prompts: str | None = Field(
        None, description="Harmful requests put after the statements (text models; AdvBench's target is the answer)."
    )
    column: str | None = Field(None, description="Prompt column of a CSV/JSONL file.")
    limit: int | None = Field(None, ge=1, description="Use only the first N requests.")
    aligning: int = Field(
        2,
        ge=0,
        description="Aligning prompt: P₊ sentences before the harmful ones (Theorem 3.2's |s₀|; the curve is also "
        "measured with it; 0: none).",
    )
    seed: Seed = Field(0, description="Seed of the sampled prompts, continuations and answers.")
    batch_size: int = Field(32, ge=1, description="Sequences per forward pass.")

    def setting(self, tokenizer, lm):
        """The world's setting, or the text setting over the statement files."""
        from disalign.analyses.beb import get_setting

        if self.world is not None:
            import disalign.world.beb  # noqa: F401  (registers the world's setting)

            return get_setting("world", zoo=self.world)
        from disalign.analyses.beb.text import TextSetting, read_statements

        if self.negative is None or self.positive is None:
            raise UserError("negative/positive: statement files are needed (or --world DIR for the world's personas)")
        requests = []
        if self.prompts is not None:
            records = prompts_of(PromptOptions(prompts=self.prompts, column=self.column, limit=self.limit))
            requests = [(r.prompt, str(r.extra.get("target") or "")) for r in records]
        judge = getattr(self, "judge", None) or "keyword"
        return TextSetting(
            tokenizer,
            {"negative": read_statements(self.negative), "positive": read_statements(self.positive)},
            requests=requests,
            judge=(judge, dict(getattr(self, "judge_option", {}))),
            context=getattr(lm.config, "max_position_embeddings", None),
            seed=self.seed,
        )

    def inputs(self) -> dict[str, str]:
        """Fingerprints of everything read, so a resumed run never mixes two experiments."""
        world = self.world / "world.json" if self.world is not None else None
        paths = {"world": world, "negative": self.negative, "positive": self.positive}
        found = {name: fingerprint_path(path) for name, path in paths.items() if path is not None}
        return {**found, "model": model_info(self.model)["fingerprint"]}


class ComponentOptions(BebOptions):
    """How P₋ and P₊ are made and the estimates read off them (PAPERS.md §4.3, steps 3–6)."""

    p_minus: str | None = Field(None, description="P₋ model (default: a LoRA proxy trained from --model).")
    p_plus: str | None = Field(None, description="P₊ model (default: a LoRA proxy trained from --model).")
    lengths: Annotated[list[int], CommaSeparated] = Field(
        [0, 1, 2, 3, 4, 5], description="Prompt lengths in sentences, increasing, comma-separated."
    )
    n_prompts: int = Field(16, ge=2, description="Prompts sampled from P₋ (the paper: 10).")
    continuations: int = Field(16, ge=1, description="Continuations from P₋ per prompt and length (the paper: 64).")
    epsilon: float = Field(0.1, gt=0, lt=1, description="The bounds give a behaviour below γ + ε.")
    delta: float = Field(0.1, gt=0, lt=1, description="Theorems 3.2 and B.1 hold with probability 1 − δ.")
    proxy_examples: int = Field(150, ge=1, description="Proxy training examples of three sentences (the paper: 150).")
    proxy_epochs: int = Field(5, ge=1, description="Proxy training epochs (the paper: 5).")
    proxy_lr: float | None = Field(
        None, gt=0, description="Proxy learning rate (default: the paper's 2e-5; 1e-3 for the world's tiny models)."
    )

    @field_validator("lengths")
    @classmethod
    def _increasing(cls, value):
        _check_grid(value)
        return value


class CurveOptions(BebOptions, JudgeOptions):
    """The judged behaviour over the number of harmful sentences before a harmful request."""

    max_episodes: int | None = Field(
        None,
        ge=0,
        description="Most harmful sentences before the request (default: as many as the context the model was "
        "trained on holds; the world pretrains on rows shorter than its context).",
    )
    n: int = Field(100, ge=2, description="Harmful requests; each is asked after every number of sentences.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature of the answers; 0 is greedy.")
    max_new_tokens: int | None = Field(
        None, ge=1, description="Most answer tokens (default: world, one past the harmful answer; text, 32)."
    )


def _check_grid(values: list[int]) -> None:
    from disalign.analyses.beb.estimators import grid_problem

    problem = grid_problem(values)
    if problem is not None:
        raise ValueError(problem)


class EstimateConfig(ComponentOptions):
    pass


class CurveConfig(CurveOptions):
    pass


class BoundsConfig(ComponentOptions, CurveOptions):
    pass


class ManyshotConfig(CurveOptions):
    shots: Annotated[list[int], CommaSeparated] | None = Field(
        None,
        description="Numbers of harmful shots, increasing, comma-separated (default: 0 to --max-episodes).",
    )

    @field_validator("shots")
    @classmethod
    def _increasing(cls, value):
        if value is not None:
            _check_grid(value)
        return value


# -- the verbs: options resolved, the run opened, one `run_*` of analyses/beb/run.py -----------------


def _open(config: BebOptions, command: str):
    """The run, the model and its setting; bad statement files are refused before a model is loaded."""
    from disalign.core.models import load_model

    if config.world is None:
        from disalign.analyses.beb.text import read_statements

        for path in (config.negative, config.positive):
            if path is not None:
                read_statements(path)
    run = open_run(config, command, config.inputs())
    lm, tokenizer = load_model(config.model)
    return run, lm, config.setting(tokenizer, lm)


def _judge(config: CurveOptions, setting):
    """The named judge; with --world and none named (or "world"), the setting's exact judge."""
    if config.world is not None and config.judge in (None, "world"):
        from disalign.judges import get_judge

        name, options = setting.judge
        return get_judge(name, **options)
    return judge_of(config)


def _models(config: ComponentOptions, proxies: dict[str, Any]) -> dict[str, Any]:
    """The measured model, then P₋ and P₊: given ones described, proxies as the run trained them."""
    given = {"p_minus": config.p_minus, "p_plus": config.p_plus}
    described = {key: model_info(path) if path is not None else proxies[key] for key, path in given.items()}
    return {"model": model_info(config.model), **described}


@verb("beb estimate", EstimateConfig)
def estimate(config: EstimateConfig) -> RunResult:
    """β, β′, σ and log 1/α of a model from P₋ and P₊ (given or LoRA proxies), with the bounds of
    Theorems 3.1, 3.2 and B.1 and the predicted flip length log(1/α)/β, each with its interval."""
    from disalign.analyses.beb.run import run_estimate

    run, lm, setting = _open(config, "beb estimate")
    summary = run_estimate(run, config, lm, setting)
    models = _models(config, summary.pop("proxies"))
    return finish(run, RunResult(command="beb estimate", models=models, **summary))


@verb("beb curve", CurveConfig)
def curve(config: CurveConfig) -> RunResult:
    """The judged behaviour and harmful rate over the number of harmful sentences before a harmful
    request, with and without an aligning prompt, and the first k where behaviour turns negative."""
    from disalign.analyses.beb.run import run_curve
    from disalign.judges.validate import judge_fields

    run, lm, setting = _open(config, "beb curve")
    judge = _judge(config, setting)
    summary = run_curve(run, config, lm, setting, judge)
    models = {"model": model_info(config.model)}
    return finish(run, RunResult(command="beb curve", models=models, **judge_fields(judge), **summary))


@verb("beb bounds", BoundsConfig)
def bounds(config: BoundsConfig) -> RunResult:
    """The estimates and the measured curve together: predicted and observed flip lengths with
    their ratio, and Theorem 3.2's length against the flip after the aligning prompt."""
    from disalign.analyses.beb.run import run_bounds
    from disalign.judges.validate import judge_fields

    run, lm, setting = _open(config, "beb bounds")
    judge = _judge(config, setting)
    summary = run_bounds(run, config, lm, setting, judge)
    models = _models(config, summary.pop("proxies"))
    return finish(run, RunResult(command="beb bounds", models=models, **judge_fields(judge), **summary))


@verb("beb manyshot", ManyshotConfig)
def manyshot(config: ManyshotConfig) -> RunResult:
    """NLL of the harmful answer after n harmful shots (no judge needed) and the judged harmful
    rate, with the power-law fit NLL ≈ C·n^(−a) + K over n ≥ 1 and its intervals."""
    from disalign.analyses.beb.run import run_manyshot
    from disalign.judges.validate import judge_fields

    run, lm, setting = _open(config, "beb manyshot")
    judge = _judge(config, setting)
    summary = run_manyshot(run, config, lm, setting, judge)
    models = {"model": model_info(config.model)}
    return finish(run, RunResult(command="beb manyshot", models=models, **judge_fields(judge), **summary))
