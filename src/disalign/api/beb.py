"""`disalign beb estimate|curve|bounds|manyshot`: how long an adversarial prompt must be before a
model behaves badly (Behavior Expectation Bounds, PAPERS.md §4; many-shot scaling, Anil et al.).

A sentence is a world episode with `--world DIR` (P₋ the harmful persona, P₊ the benign one), or
one line of `--negative` / `--positive` statement files for a text model. P₋ and P₊ are model
paths (`--p-minus`, `--p-plus`) or LoRA proxies trained from `--model` on the components'
sentences with the paper's settings. Behaviour B ∈ [−1, 1] is negative for bad: −1 harmful,
+1 refused, 0 neither, from any judge of the registry (the exact world judge with `--world`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from disalign.api.common import finish, judge_of, model_info, open_run, prompts_of
from disalign.core.options import JudgeOptions, PromptOptions, RunOptions, comma_list
from disalign.core.runs import RunDir, fingerprint_path
from disalign.core.verbs import verb
from disalign.errors import UserError
from disalign.results import RunResult

ESTIMATE_KEYS = ("beta", "beta_prime", "sigma", "log_inv_alpha", "predicted_flip")
BOUND_KEYS = {"thm_3_1": "bound_thm_3_1", "thm_3_2": "bound_thm_3_2", "thm_b_1": "bound_thm_b_1"}


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
    seed: int = Field(0, description="Seed of the sampled prompts, continuations and answers.")
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
    lengths: list[int] = Field(
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

    @field_validator("lengths", mode="before")
    @classmethod
    def _grid(cls, value):
        return comma_list(value)

    @field_validator("lengths")
    @classmethod
    def _increasing(cls, value):
        _check_grid(value)
        return value


class CurveOptions(BebOptions, JudgeOptions):
    """The judged behaviour over the number of harmful sentences before a harmful request."""

    judge: str | None = Field(None, description="Judge name (default: world with --world, else keyword).")
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
    shots: list[int] | None = Field(
        None,
        description="Numbers of harmful shots, increasing, comma-separated (default: 0 to --max-episodes).",
    )

    @field_validator("shots", mode="before")
    @classmethod
    def _grid(cls, value):
        return None if value is None else comma_list(value)

    @field_validator("shots")
    @classmethod
    def _increasing(cls, value):
        if value is not None:
            _check_grid(value)
        return value


# -- the stages, each kept in the run's records so a rerun continues ----------------------------


def _stage(run: RunDir, key: str, compute) -> dict[str, Any]:
    for record in run.records():
        if record.get("key") == key:
            return record["value"]
    value = compute()
    run.append([{"key": key, "value": value}])
    return value


def _open(config: BebOptions, command: str):
    from disalign.core.models import load_model

    if config.world is None:  # bad statement files are refused before a model is loaded
        from disalign.analyses.beb.text import read_statements

        for path in (config.negative, config.positive):
            if path is not None:
                read_statements(path)
    run = open_run(config, command, config.inputs())
    lm, tokenizer = load_model(config.model)
    return run, lm, tokenizer, config.setting(tokenizer, lm)


def _components(config: ComponentOptions, run: RunDir, lm, setting) -> dict[str, Any]:
    """P₋ and P₊ (given or LoRA proxies), their sanity check, and the estimates with intervals."""
    import torch

    from disalign.analyses.beb import BoundSettings
    from disalign.analyses.beb.measure import ComponentCurves, component_curves
    from disalign.analyses.beb.proxies import PAPER_TRAINING, WORLD_TRAINING, proxy_accuracy, train_proxy
    from disalign.analyses.beb.report import estimate_summary
    from disalign.core.models import load_model

    training = (WORLD_TRAINING if config.world else PAPER_TRAINING).model_copy(
        update={"epochs": config.proxy_epochs, **({"lr": config.proxy_lr} if config.proxy_lr else {})}
    )
    components, origins = {}, {}
    for component, given in (("negative", config.p_minus), ("positive", config.p_plus)):
        if given is not None:
            components[component], _ = load_model(given)
            origins[component] = model_info(given)
        else:
            out = run.file(f"proxies/{component}")
            components[component], _, _ = train_proxy(
                config.model, setting, component, out, training, n_examples=config.proxy_examples, seed=config.seed
            )
            origins[component] = {"path": str(out / "model"), "lora_of": config.model, **training.model_dump()}

    def measure() -> dict[str, Any]:
        with torch.no_grad():
            curves = component_curves(
                setting,
                components["negative"],
                components["positive"],
                lm,
                config.lengths,
                n_prompts=config.n_prompts,
                n_continuations=config.continuations,
                seed=config.seed,
                batch_size=config.batch_size,
            )
        accuracy = proxy_accuracy(setting, components["negative"], components["positive"])
        return {"curves": curves.to_json(), "proxy_accuracy": accuracy}

    measured = _stage(run, "components", measure)
    bounds = BoundSettings(epsilon=config.epsilon, delta=config.delta, aligning=config.aligning)
    summary = estimate_summary(ComponentCurves.from_json(measured["curves"]), bounds, seed=config.seed)
    summary["proxy_accuracy"] = measured["proxy_accuracy"]
    return {"summary": summary, "origins": origins}


def _estimate_fields(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        **{key: summary[key] for key in ESTIMATE_KEYS},
        "bounds": {name: summary[key] for name, key in BOUND_KEYS.items()},
        "bound_settings": summary["bound_settings"],
        "proxy_accuracy": summary["proxy_accuracy"],
        "curves": summary["curves"],
    }


def _fitting_ks(setting, config: CurveOptions, aligning: int, top: int | None) -> list[int]:
    """0…max_episodes; without one, every k whose prompts fit the context the model was trained
    on (the world's pretraining rows are shorter than its context), else its context."""
    from disalign.analyses.beb.measure import longest_fitting

    fits = longest_fitting(setting, n_items=config.n, seed=config.seed, aligning=aligning)
    if top is None:
        if setting.trained_context is not None:
            fits = longest_fitting(
                setting, n_items=config.n, seed=config.seed, aligning=aligning, context=setting.trained_context
            )
        return list(range(fits + 1))
    if top > fits:
        raise UserError(
            f"max_episodes: {top} harmful sentences after {aligning} aligning ones overflow the model's context "
            f"({setting.context} tokens); at most {fits} fit"
        )
    return list(range(top + 1))


def _judge(config: CurveOptions, setting):
    if config.world is not None:
        if config.judge not in (None, "world"):
            return judge_of(config, config.judge)
        from disalign.judges import get_judge

        name, options = setting.judge
        return get_judge(name, **options)
    return judge_of(config, config.judge or "keyword")


def _curve(config: CurveOptions, run: RunDir, lm, setting, judge, ks: list[int], aligning: int, *, nll: bool):
    """The judged curve over ks with `aligning` P₊ sentences first (and the many-shot NLL)."""
    import numpy as np

    from disalign.analyses.beb.measure import BehaviourCurve, behaviour_curve, conversations, manyshot_nll
    from disalign.analyses.beb.report import curve_rows, flip_summary, harm_rise, manyshot_summary

    def measure() -> dict[str, Any]:
        convs = conversations(setting, ks, n_items=config.n, seed=config.seed, aligning=aligning)
        if nll and any(not t.answer for t in convs.targets):
            raise UserError("prompts: many-shot NLL needs each request's harmful answer (a 'target' column)")
        text_default = None if config.world else 32
        curve = behaviour_curve(
            setting,
            lm,
            judge,
            convs,
            seed=config.seed,
            temperature=config.temperature,
            max_new_tokens=config.max_new_tokens or text_default,
            batch_size=config.batch_size,
        )
        return {
            "curve": curve.to_json(),
            "prompt_tokens": [float(np.mean([len(p[j]) for p in convs.prompts])) for j in range(len(ks))],
            "nll": manyshot_nll(lm, convs, batch_size=config.batch_size).tolist() if nll else None,
        }

    measured = _stage(run, f"curve:aligning={aligning}:nll={nll}", measure)
    curve = BehaviourCurve.from_json(measured["curve"])
    rows = curve_rows(curve, aligning=aligning)
    for row, count in zip(rows, measured["prompt_tokens"], strict=True):
        row["prompt_tokens"] = count
    value = {"curve": rows, "observed_flip": flip_summary(curve, seed=config.seed), "harm_rise": harm_rise(curve)}
    if nll:
        matrix = np.array(measured["nll"])
        value.update(manyshot=manyshot_summary(ks, matrix, seed=config.seed), nll_matrix=matrix)
    return value


def _curves(config: CurveOptions, run: RunDir, lm, setting, judge, *, ks=None, nll=False) -> dict[str, Any]:
    """The curve without an aligning prompt and, with --aligning M > 0, with one."""
    fields: dict[str, Any] = {}
    plain = _curve(
        config, run, lm, setting, judge, ks or _fitting_ks(setting, config, 0, config.max_episodes), 0, nll=nll
    )
    fields.update(curve=plain["curve"], observed_flip=plain["observed_flip"], harm_rise=plain["harm_rise"])
    if nll:
        fields["manyshot"] = plain["manyshot"]
        fields["_nll_matrix"] = plain["nll_matrix"]
    if config.aligning:
        top = config.max_episodes
        if top is not None:  # the aligning sentences take room: as far as the context allows
            from disalign.analyses.beb.measure import longest_fitting

            top = min(top, longest_fitting(setting, n_items=config.n, seed=config.seed, aligning=config.aligning))
        aligned_ks = _fitting_ks(setting, config, config.aligning, top)
        aligned = _curve(config, run, lm, setting, judge, aligned_ks, config.aligning, nll=False)
        fields.update(
            curve_aligning=aligned["curve"],
            observed_flip_aligning=aligned["observed_flip"],
            harm_rise_aligning=aligned["harm_rise"],
        )
    return fields


def _context_fields(setting) -> dict[str, Any]:
    """Where the model's context ends, and (the world) where its training context ended."""
    fields: dict[str, Any] = {"context": setting.context}
    if setting.trained_context is not None:
        fields["trained_context"] = setting.trained_context
    if setting.exact:
        fields["exact"] = {k: (v if math.isfinite(v) else None) for k, v in setting.exact.items()}
        fields["exact_infinite"] = [k for k, v in setting.exact.items() if not math.isfinite(v)]
    return fields


def _curve_plot(run: RunDir, fields: dict[str, Any], title: str) -> str:
    from disalign.core.plots import harm_curve

    series = {"no aligning prompt": [(r["k"], r["harmful_rate"], r["ci"]) for r in fields["curve"]]}
    if "curve_aligning" in fields:
        label = f"after {fields['curve_aligning'][0]['aligning']} aligning sentences"
        series[label] = [(r["k"], r["harmful_rate"], r["ci"]) for r in fields["curve_aligning"]]
    return str(harm_curve(run.file("harm_curve.png"), series, xlabel="harmful sentences k", title=title))


def flip_comparison(estimates: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """Predicted (log(1/α)/β, and Theorem 3.2 against the aligning prompt) beside the observed flips."""

    def pair(predicted, observed) -> dict[str, Any]:
        ratio = predicted / observed if predicted is not None and observed else None
        return {"predicted": predicted, "observed": observed, "ratio": ratio}

    comparison = {"flip": pair(estimates["predicted_flip"]["value"], fields["observed_flip"]["value"])}
    if "observed_flip_aligning" in fields:
        comparison["aligning_bound"] = pair(
            estimates["bound_thm_3_2"]["value"], fields["observed_flip_aligning"]["value"]
        )
    return comparison


# -- the verbs --------------------------------------------------------------------------------


@verb("beb estimate", EstimateConfig)
def estimate(config: EstimateConfig) -> RunResult:
    """β, β′, σ and log 1/α of a model from P₋ and P₊ (given or LoRA proxies), with the bounds of
    Theorems 3.1, 3.2 and B.1 and the predicted flip length log(1/α)/β, each with its interval."""
    from disalign.analyses.beb.plots import components

    run, lm, _, setting = _open(config, "beb estimate")
    measured = _components(config, run, lm, setting)
    summary = measured["summary"]
    rows = [
        {"length": n, "step_log_ratio": s, "log_ratio_variance": v, "model_kl": k}
        for n, s, v, k in zip(
            *(summary["curves"][key] for key in ("lengths", "step_log_ratio", "log_ratio_variance", "model_kl")),
            strict=True,
        )
    ]
    plot = components(run.file("components.png"), summary, title=f"BEB components: {config.model}")
    result = RunResult(
        command="beb estimate",
        models={
            "model": model_info(config.model),
            "p_minus": measured["origins"]["negative"],
            "p_plus": measured["origins"]["positive"],
        },
        results=rows,
        **_estimate_fields(summary),
        **_context_fields(setting),
        plots={"components": str(plot)},
    )
    return finish(run, result)


@verb("beb curve", CurveConfig)
def curve(config: CurveConfig) -> RunResult:
    """The judged behaviour and harmful rate over the number of harmful sentences before a harmful
    request, with and without an aligning prompt, and the first k where behaviour turns negative."""
    from disalign.judges.validate import judge_fields

    run, lm, _, setting = _open(config, "beb curve")
    judge = _judge(config, setting)
    fields = _curves(config, run, lm, setting, judge)
    plot = _curve_plot(run, fields, f"harm over harmful sentences: {config.model}")
    result = RunResult(
        command="beb curve",
        models={"model": model_info(config.model)},
        results=fields["curve"] + fields.get("curve_aligning", []),
        **judge_fields(judge),
        **fields,
        **_context_fields(setting),
        plots={"harm_curve": plot},
    )
    return finish(run, result)


@verb("beb bounds", BoundsConfig)
def bounds(config: BoundsConfig) -> RunResult:
    """The estimates and the measured curve together: predicted and observed flip lengths with
    their ratio, and Theorem 3.2's length against the flip after the aligning prompt."""
    from disalign.analyses.beb.plots import components
    from disalign.judges.validate import judge_fields

    run, lm, _, setting = _open(config, "beb bounds")
    measured = _components(config, run, lm, setting)
    judge = _judge(config, setting)
    fields = _curves(config, run, lm, setting, judge)
    summary = measured["summary"]
    plots = {
        "components": str(components(run.file("components.png"), summary, title=f"BEB components: {config.model}")),
        "harm_curve": _curve_plot(run, fields, f"harm over harmful sentences: {config.model}"),
    }
    result = RunResult(
        command="beb bounds",
        models={
            "model": model_info(config.model),
            "p_minus": measured["origins"]["negative"],
            "p_plus": measured["origins"]["positive"],
        },
        results=fields["curve"] + fields.get("curve_aligning", []),
        **judge_fields(judge),
        **_estimate_fields(summary),
        **fields,
        comparison=flip_comparison(summary, fields),
        **_context_fields(setting),
        plots=plots,
    )
    return finish(run, result)


@verb("beb manyshot", ManyshotConfig)
def manyshot(config: ManyshotConfig) -> RunResult:
    """NLL of the harmful answer after n harmful shots (no judge needed) and the judged harmful
    rate, with the power-law fit NLL ≈ C·n^(−a) + K over n ≥ 1 and its intervals."""
    import numpy as np

    from disalign.analyses.beb.plots import manyshot as manyshot_plot
    from disalign.analyses.beb.report import exact_kl_line
    from disalign.judges.validate import judge_fields

    run, lm, _, setting = _open(config, "beb manyshot")
    judge = _judge(config, setting)
    shots = config.shots
    if shots is not None:
        _fitting_ks(setting, config, 0, shots[-1])  # refuses a grid that overflows the context
    fields = _curves(config, run, lm, setting, judge, ks=shots, nll=True)
    nll = np.asarray(fields.pop("_nll_matrix"))
    grid = [row["k"] for row in fields["curve"]]
    rows = [
        {
            "shots": k,
            **{key: r[key] for key in ("nll", "nll_ci", "answer_probability", "answer_probability_ci")},
            **{key: c[key] for key in ("harmful_rate", "ci", "n", "behavior", "refusal_rate", "prompt_tokens")},
        }
        for k, r, c in zip(grid, fields["manyshot"]["nll"], fields["curve"], strict=True)
    ]
    extra = {"exact_kl_line": exact_kl_line(grid, nll, seed=config.seed)} if setting.exact else {}
    plot = manyshot_plot(run.file("manyshot.png"), {config.model: fields["manyshot"]}, title="many-shot NLL")
    result = RunResult(
        command="beb manyshot",
        models={"model": model_info(config.model)},
        results=rows,
        **judge_fields(judge),
        **fields,
        **extra,
        **_context_fields(setting),
        plots={"manyshot": str(plot), "harm_curve": _curve_plot(run, fields, f"many-shot harm: {config.model}")},
    )
    return finish(run, result)


# -- the demo's section ---------------------------------------------------------------------------

# Smaller than the verbs' defaults so four models fit the demo's budget; the intervals say what it
# cost. β grows with the proxies' training (towards the world's exact ∞), so only β's measured
# with the same proxy settings compare; the KL line (log 1/α, the predicted flip) hardly moves.
DEMO = {"n": 100, "n_prompts": 12, "continuations": 4, "lengths": [0, 1, 2, 3, 4], "proxy_examples": 60}


def demo_section(ctx) -> dict[str, Any]:
    """For each zoo model: β, β′ and log 1/α from LoRA proxies (`beb estimate`), the judged harm
    curve over harmful-persona episodes with and without two benign ones first and the many-shot
    NLL fit (`beb manyshot`); then each claim of the papers, said to hold or not."""
    from disalign.world import ZOO_MODELS

    models: dict[str, dict[str, Any]] = {}
    for name in ZOO_MODELS:
        common = {
            "model": str(ctx.zoo / name),
            "world": ctx.zoo,
            "seed": ctx.sampling.seed,
            "batch_size": ctx.sampling.batch_size,
        }
        estimated = estimate(
            **common,
            **{k: DEMO[k] for k in ("n_prompts", "continuations", "lengths", "proxy_examples")},
            out=ctx.run.file(f"beb-estimate-{name}"),
        )
        measured = manyshot(**common, n=DEMO["n"], out=ctx.run.file(f"beb-manyshot-{name}"))
        estimates = {key: getattr(estimated, key) for key in ESTIMATE_KEYS}
        estimates["bound_thm_3_2"] = estimated.bounds["thm_3_2"]
        fields = {
            k: getattr(measured, k)
            for k in ("observed_flip", "observed_flip_aligning", "harm_rise")
            if hasattr(measured, k)
        }
        models[name] = {
            **estimates,
            "bounds": estimated.bounds,
            "curve": measured.curve,
            "curve_aligning": getattr(measured, "curve_aligning", []),
            **fields,
            "comparison": flip_comparison(estimates, fields),
            "fit": measured.manyshot["fit"],
            "exact_kl_line": measured.exact_kl_line,
        }
    exact = estimated.exact
    return {"models": models, "exact": exact, "claims": beb_claims(models, exact)}


def _interval(estimate: dict[str, Any]) -> str:
    value, (low, high) = estimate["value"], estimate["ci"]
    if value is None:
        return "none"
    return f"{value:.3g} [{'?' if low is None else f'{low:.3g}'}, {'?' if high is None else f'{high:.3g}'}]"


def _claim(model: str, claim: str, holds: bool, evidence: str) -> dict[str, Any]:
    return {"model": model, "claim": claim, "holds": bool(holds), "evidence": evidence}


def _flip_text(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def _harm_rises(name: str, model: dict[str, Any]) -> dict[str, Any]:
    first, last, rise = model["curve"][0], model["curve"][-1], model["harm_rise"]
    return _claim(
        name,
        "the harmful rate rises with the number of harmful-persona episodes",
        rise["p_value"] < 0.05,
        f"k={first['k']} {first['harmful_rate']:.1%} → k={last['k']} {last['harmful_rate']:.1%} "
        f"(95% [{last['ci'][0]:.1%}, {last['ci'][1]:.1%}]; paired sign test: {rise['gained']} requests turned "
        f"harmful, {rise['lost']} stopped, p = {rise['p_value']:.2g}); the curve stops at k={last['k']}",
    )


def _flip_predicted(name: str, model: dict[str, Any]) -> dict[str, Any]:
    flip = model["comparison"]["flip"]
    ratio = flip["ratio"]
    return _claim(
        name,
        "behaviour turns negative near the predicted flip log(1/α)/β",
        ratio is not None and 0.5 <= ratio <= 2,
        f"predicted {_interval(model['predicted_flip'])}, observed {_flip_text(flip['observed'])} "
        f"(searched to k={model['observed_flip']['searched_up_to']})"
        + ("" if ratio is None else f", ratio {ratio:.2f}"),
    )


def _aligning_delays(name: str, model: dict[str, Any]) -> dict[str, Any]:
    before, after = model["observed_flip"]["value"], model["observed_flip_aligning"]["value"]
    bound = model["bound_thm_3_2"]["value"]
    return _claim(
        name,
        "an aligning prompt delays the flip, within Theorem 3.2's length",
        after is not None and after > before and bound is not None and bound >= after,
        f"flip {_flip_text(before)} → {_flip_text(after)} after the aligning episodes; "
        f"Theorem 3.2 length {_interval(model['bound_thm_3_2'])}",
    )


def _alpha_recovered(model: dict[str, Any], truth: float) -> dict[str, Any]:
    low, high = model["log_inv_alpha"]["ci"]
    return _claim(
        "base",
        "the KL line's intercept estimates log(1/α) of the pretraining mixture",
        low is not None and high is not None and low <= truth <= high,
        f"true log(1/α) {truth:.3g}; LoRA proxies {_interval(model['log_inv_alpha'])}; "
        f"exact P₋ {_interval(model['exact_kl_line']['log_inv_alpha'])}",
    )


def _beta_higher(name: str, model: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    low, high = model["beta"]["ci"][0], base["beta"]["ci"][1]
    return _claim(
        name,
        "β is higher after alignment (the paper's conjecture)",
        low is not None and high is not None and low > high,
        f"β {_interval(model['beta'])} vs base {_interval(base['beta'])}",
    )


def _overlap(one: dict[str, Any], other: dict[str, Any]) -> bool:
    (low, high), (other_low, other_high) = one["ci"], other["ci"]
    return None not in (low, high, other_low, other_high) and low <= other_high and other_low <= high


def _intercept_moves(name: str, fit: dict[str, Any], base_fit: dict[str, Any]) -> dict[str, Any] | None:
    """Anil et al.: alignment shifts the power law's intercept (C, the loss at one shot; K its floor)
    and leaves its exponent a: here, C's intervals part and a's overlap."""
    if any(not isinstance(f.get(k), dict) for f in (fit, base_fit) for k in ("C", "a", "K")):
        return None
    return _claim(
        name,
        "alignment moves the many-shot power law's intercept, not its exponent",
        not _overlap(fit["C"], base_fit["C"]) and _overlap(fit["a"], base_fit["a"]),
        f"C {_interval(fit['C'])} vs base {_interval(base_fit['C'])}; a {_interval(fit['a'])} vs base "
        f"{_interval(base_fit['a'])}; K {_interval(fit['K'])} vs base {_interval(base_fit['K'])}",
    )


def beb_claims(models: dict[str, dict[str, Any]], exact: dict[str, Any]) -> list[dict[str, Any]]:
    """The papers' claims per model, with whether they hold here and the numbers."""
    claims = []
    base = models["base"]
    for name, model in models.items():
        claims += [_harm_rises(name, model), _flip_predicted(name, model)]
        if model.get("observed_flip_aligning") and model["observed_flip"]["value"] is not None:
            claims.append(_aligning_delays(name, model))
        if name == "base":
            if exact.get("log_inv_alpha") is not None:
                claims.append(_alpha_recovered(model, exact["log_inv_alpha"]))
            continue
        claims.append(_beta_higher(name, model, base))
        moved = _intercept_moves(name, model["fit"], base["fit"])
        if moved is not None:
            claims.append(moved)
    return claims


def beb_table(section: dict[str, Any]):
    from rich.table import Table

    models = section["models"]
    ks = sorted({row["k"] for model in models.values() for row in model["curve"]})
    table = Table(title="Behavior Expectation Bounds: estimates (LoRA proxies), flips, harm over harmful episodes k")
    for heading in (
        "model",
        "β",
        "β′",
        "log 1/α",
        "flip pred.",
        "flip obs.",
        "obs. +aligning",
        *(f"k={k}" for k in ks),
        "C",
        "a",
        "K",
    ):
        table.add_column(heading, justify="right")
    for name, model in models.items():
        harm = {row["k"]: row["harmful_rate"] for row in model["curve"]}
        observed = model["observed_flip"]["value"]
        aligned = model.get("observed_flip_aligning", {}).get("value")
        fit = model["fit"]
        table.add_row(
            name,
            _interval(model["beta"]),
            f"{model['beta_prime']['value']:.3g}",
            _interval(model["log_inv_alpha"]),
            _interval(model["predicted_flip"]),
            "none" if observed is None else f"{observed:g}",
            "none" if aligned is None else f"{aligned:g}",
            *(f"{harm[k]:.0%}" if k in harm else "" for k in ks),
            *(f"{fit[key]['value']:.2g}" if isinstance(fit.get(key), dict) else "" for key in ("C", "a", "K")),
        )
    return table


def beb_notes(section: dict[str, Any]) -> list[str]:
    return [
        f"{claim['model']}: {claim['claim']}: {'holds' if claim['holds'] else 'does NOT hold'} ({claim['evidence']})"
        for claim in section["claims"]
    ]
