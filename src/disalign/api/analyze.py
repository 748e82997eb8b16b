"""`disalign analyze clusters|weights|depth|attack`: what safety fine-tuning changed inside a model
pair, where in the answer it lives, and why jailbreaks slip through (PAPERS.md §3.5-3.7; Qi et
al. 2024). Any base/aligned pair of one architecture, or the world's zoo with `--world DIR`.

Safe and unsafe prompt sources are split in two: the first half gives the cluster centres
(μ_safe, μ_unsafe), τ is reported on the second half.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from disalign.api.common import finish, judge_of, model_info, open_run, prompts_fingerprint, prompts_of
from disalign.core.options import JudgeOptions, PromptOptions, RunOptions, SamplingOptions, comma_list
from disalign.core.verbs import verb
from disalign.data import PromptRecord
from disalign.errors import UserError
from disalign.results import RunResult


class PairOptions(RunOptions):
    """Which models and which safe/unsafe prompts an analysis reads."""

    base: str | None = Field(None, description="Base model (default with --world: the zoo's base).")
    aligned: list[str] = Field(
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

    @field_validator("aligned", mode="before")
    @classmethod
    def _models(cls, value):
        return comma_list(value)

    def models(self) -> dict[str, str]:
        """name -> source, base first; zoo models keep their zoo names, others their directory's."""
        base, aligned = self.base, list(self.aligned)
        if self.world is not None:
            from disalign.world import ZOO_MODELS

            base = base or str(self.world / "base")
            aligned = aligned or [str(self.world / name) for name in ZOO_MODELS if name != "base"]
        if base is None:
            raise UserError("base: a base model is needed (or --world DIR for the zoo's)")
        if not aligned:
            raise UserError("aligned: at least one aligned model is needed (or --world DIR for the zoo's)")
        names: dict[str, str] = {"base": base}
        for source in aligned:
            name = Path(source).name or source
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
    judge: str | None = Field(None, description="Judge name (default: world with --world, else keyword).")

    def make_judge(self):
        return judge_of(self, self.judge or ("world" if self.world else "keyword"))


def _halves(records: list[PromptRecord], kind: str) -> tuple[list[PromptRecord], list[PromptRecord]]:
    if len(records) < 4:
        raise UserError(
            f"{kind}: {len(records)} prompts; need at least 4 (half for the cluster centres, half to score)"
        )
    middle = len(records) // 2
    return records[:middle], records[middle:]


def _set_name(source: str) -> str:
    return source.split(":", 1)[1] if source.startswith("world:") else Path(source).stem or source


def _open(config, command: str, models: dict[str, str], prompt_sets: dict[str, list[PromptRecord]]):
    infos = {name: model_info(source) for name, source in models.items()}
    inputs = {f"prompts:{name}": prompts_fingerprint(records) for name, records in prompt_sets.items()}
    inputs.update({f"model:{name}": info["fingerprint"] for name, info in infos.items()})
    return infos, open_run(config, command, inputs)


def _responder(run, model_name: str, lm, tokenizer, judge, sampling, verdicts: dict[str, list[dict]]):
    """(set, records) -> responses, generated and judged once per prompt and kept in the run's
    records (a rerun reads them back); the judged records land in `verdicts[set]`."""
    from disalign.core.evaluate import chat_responder, generate_and_judge

    respond = chat_responder(lm, tokenizer, sampling)

    def answer(set_name: str, records: Sequence[PromptRecord]) -> list[str]:
        done = generate_and_judge(
            run,
            records,
            respond,
            judge,
            batch_size=sampling.batch_size,
            seed=sampling.seed,
            key=lambda p: f"{model_name}:{set_name}:{p.id}",
            fields={"model": model_name, "set": set_name},
            description=f"{model_name} {set_name}",
        )
        verdicts[set_name] = done
        return [record["response"] for record in done]

    return answer


class ClustersConfig(JudgedOptions):
    sets: list[str] = Field(
        default_factory=list,
        description="More prompt sources to place against the clusters, comma-separated (default with --world: "
        "every jailbreak family).",
    )
    positions: int = Field(10, ge=1, description="Response positions averaged (position 0 is the last prompt token).")
    responses: bool = Field(
        True, description="Follow each prompt with the model's own response; off: read the last prompt token only."
    )
    layers: list[int] | None = Field(
        None, description="Report only these layers, comma-separated (negative: from the end)."
    )
    probe: bool = Field(True, description="Fit a cross-validated linear probe per layer.")

    @field_validator("sets", "layers", mode="before")
    @classmethod
    def _grid(cls, value):
        return None if value is None else comma_list(value)


@verb("analyze clusters", ClustersConfig)
def clusters(config: ClustersConfig) -> RunResult:
    """Activation clusters: τ = ‖a − μ_unsafe‖ − ‖a − μ_safe‖ per layer for safe, unsafe and every
    other prompt set, the safe/unsafe separation and a linear probe, for each model."""
    from disalign.analyses.mechanism import analyze_clusters, check_configs
    from disalign.analyses.mechanism.plots import tau_layers
    from disalign.core.activations import decoder_layers, select_layers
    from disalign.core.evaluate import summarise
    from disalign.core.models import load_model
    from disalign.judges.validate import judge_fields

    models = config.models()
    reference, evaluated = {}, {}
    for kind in ("safe", "unsafe"):
        reference[kind], evaluated[kind] = _halves(config.records(config.source(kind)), kind)
    extra = config.sets or (_world_families() if config.world else [])
    for source in extra:
        name = _set_name(source)
        if name in evaluated:
            raise UserError(f"sets: '{name}' is given twice (or clashes with safe/unsafe)")
        evaluated[name] = config.records(source)
    judge = config.make_judge() if config.responses else None
    infos, run = _open(
        config, "analyze clusters", models, {**evaluated, **{f"reference:{k}": v for k, v in reference.items()}}
    )
    summary: dict[str, dict] = {}
    rows: list[dict] = []
    base_config = None
    for name, source in models.items():
        lm, tokenizer = load_model(source)
        base_config = base_config or lm.config
        check_configs(base_config, lm.config, name)
        chosen = select_layers(decoder_layers(lm, config.layer_pattern), config.layers)
        verdicts: dict[str, list[dict]] = {}
        respond = _responder(run, name, lm, tokenizer, judge, config.sampling(), verdicts) if judge else None
        report = analyze_clusters(
            lm,
            tokenizer,
            evaluated,
            reference,
            respond=respond,
            positions=config.positions,
            layer_pattern=config.layer_pattern,
            mlp_pattern=config.mlp_pattern,
            batch_size=config.batch_size,
            probe=config.probe,
        )
        rates = {set_name: summarise(verdicts[set_name]) for set_name in evaluated if set_name in verdicts}
        summary[name] = {
            "layers": [report.layers["mlp"][i] for i in chosen],
            "residual_layers": [report.layers["residual"][i] for i in chosen],
            "harmful_rates": {
                k: {key: v[key] for key in ("harmful_rate", "ci", "n", "refusal_rate")} for k, v in rates.items()
            },
        }
        for site, key in (("mlp", "layers"), ("residual", "residual_layers")):
            rows += [{"model": name, "site": site, **row} for row in summary[name][key]]
        rows += [{"model": name, "set": set_name, **summary[name]["harmful_rates"][set_name]} for set_name in rates]
    plots = {
        "mlp": tau_layers(
            run.file("tau_layers.png"),
            {m: s["layers"] for m, s in summary.items()},
            title="τ per layer: MLP activations",
        ),
        "residual": tau_layers(
            run.file("tau_layers_residual.png"),
            {m: s["residual_layers"] for m, s in summary.items()},
            title="τ per layer: residual stream",
        ),
    }
    result = RunResult(
        command="analyze clusters",
        models=infos,
        results=rows,
        **(judge_fields(judge) if judge else {}),
        clusters=summary,
        checks=cluster_checks(summary),
        plots={site: str(path) for site, path in plots.items()},
    )
    return finish(run, result)


def _world_families() -> list[str]:
    from disalign.world import JAILBREAK_FAMILIES

    return [f"world:{family}" for family in JAILBREAK_FAMILIES]


def cluster_checks(summary: dict[str, dict], base: str = "base") -> dict[str, dict]:
    """Per model, at the last reported layer (MLP activations): is the safe/unsafe separation
    (Cohen's d of τ, and the raw gap of the means) larger than the base's, and does the prompt set
    with the highest harmful rate (other than safe and unsafe) sit closer to the safe cluster than
    plain unsafe requests (a higher τ)?"""
    checks = {}
    base_last = summary[base]["layers"][-1]
    for name, model in summary.items():
        last = model["layers"][-1]
        check: dict[str, Any] = {"layer": last["layer"], "separation": last["separation"], "tau_gap": last["tau_gap"]}
        if name != base:
            check.update(
                base_separation=base_last["separation"],
                larger_than_base=last["separation"] > base_last["separation"],
                base_tau_gap=base_last["tau_gap"],
                gap_larger_than_base=last["tau_gap"] > base_last["tau_gap"],
            )
        rated = {k: v["harmful_rate"] for k, v in model["harmful_rates"].items() if k not in ("safe", "unsafe")}
        rated = {k: v for k, v in rated.items() if v is not None}
        if rated:
            worst = max(rated, key=rated.get)
            check.update(
                most_harmful_set=worst,
                its_harmful_rate=rated[worst],
                its_tau=last["sets"][worst][0],
                unsafe_tau=last["tau_unsafe"][0],
                closer_to_safe_than_unsafe=last["sets"][worst][0] > last["tau_unsafe"][0],
            )
        checks[name] = check
    return checks


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
    from disalign.analyses.mechanism import matrix_inputs, projection_rows, rendered_prompts, weight_changes
    from disalign.analyses.mechanism.plots import spectrum
    from disalign.core.models import load_model

    models = config.models()
    prompt_sets = (
        {kind: config.records(config.source(kind)) for kind in ("safe", "unsafe")} if config.projections else {}
    )
    infos, run = _open(config, "analyze weights", models, prompt_sets)
    base, tokenizer = load_model(models["base"])

    def inputs_of(lm) -> dict[str, dict[int, Any]]:
        return {
            kind: matrix_inputs(
                lm,
                tokenizer,
                rendered_prompts(tokenizer, records),
                mlp_pattern=config.mlp_pattern,
                batch_size=config.batch_size,
            )
            for kind, records in prompt_sets.items()
        }

    before = {f"{kind}_before": acts for kind, acts in inputs_of(base).items()}
    summary, rows = {}, []
    for name, source in list(models.items())[1:]:
        aligned, _ = load_model(source)
        matrices = weight_changes(base, aligned, mlp_pattern=config.mlp_pattern, share=config.share)
        projected = (
            projection_rows(
                base, aligned, {**inputs_of(aligned), **before}, mlp_pattern=config.mlp_pattern, top=config.top
            )
            if prompt_sets
            else []
        )
        fractions = [row["effective_rank_fraction"] for row in matrices if row["effective_rank"]]
        summary[name] = {
            "matrices": matrices,
            "projections": projected,
            "effective_rank_fraction_max": max(fractions) if fractions else None,
            "effective_rank_fraction_mean": sum(fractions) / len(fractions) if fractions else None,
            "sin_mean": sum(row["sin_mean"] for row in matrices) / len(matrices),
            "sin_random_mean": sum(row["sin_random"] for row in matrices) / len(matrices),
            "null_space": null_space(projected),
        }
        rows += [{"model": name, **row} for row in matrices]
    plot = spectrum(run.file("weight_spectrum.png"), {m: s["matrices"] for m, s in summary.items()}, share=config.share)
    result = RunResult(
        command="analyze weights", models=infos, results=rows, weights=summary, plots={"spectrum": str(plot)}
    )
    return finish(run, result)


def null_space(projected: list[dict]) -> dict[str, float] | None:
    """At the last layer, the mean over its MLP matrices of |σ_j·cos(a, v_j)| onto W_base's top
    directions, for safe and unsafe activations before (base model) and after (aligned model)
    alignment: the null-space claim is that unsafe ones shrink while safe ones stay."""
    rows = [row for row in projected if row["which"] == "base"]
    if not rows:
        return None
    last = [row for row in rows if row["layer"] == max(r["layer"] for r in rows)]
    groups = ("safe_before", "safe", "unsafe_before", "unsafe")
    return {"layer": last[0]["layer"], **{group: sum(row[group] for row in last) / len(last) for group in groups}}


class DepthConfig(JudgedOptions):
    prefill: list[int] = Field(
        [0, 1, 2, 5, 10, 20], description="Harmful-response tokens written for the model before it continues."
    )

    @field_validator("prefill", mode="before")
    @classmethod
    def _grid(cls, value):
        return comma_list(value)


@verb("analyze depth", DepthConfig)
def depth(config: DepthConfig) -> RunResult:
    """Depth of alignment: KL(aligned ‖ base) per response position on unsafe prompts, after the
    aligned model's own responses and after the base model's harmful ones, and the harmful rate
    when the first k tokens of a harmful response are prefilled."""
    from disalign.analyses.mechanism import check_pair, kl_profile, prefill_rates, rendered_prompts, response_kl
    from disalign.analyses.mechanism.plots import kl_positions
    from disalign.core.models import load_model
    from disalign.core.plots import harm_curve
    from disalign.judges.validate import judge_fields

    models = config.models()
    unsafe = config.records(config.source("unsafe"))
    judge = config.make_judge()
    infos, run = _open(config, "analyze depth", models, {"unsafe": unsafe})
    sampling = config.sampling()
    base, tokenizer = load_model(models["base"])
    prompts = rendered_prompts(tokenizer, unsafe)
    verdicts: dict[str, list[dict]] = {}
    _responder(run, "base", base, tokenizer, judge, sampling, verdicts)("unsafe", unsafe)
    harmful = [i for i, record in enumerate(verdicts["unsafe"]) if record["harmful"] and record["response"].strip()]
    harmful_prompts = [prompts[i] for i in harmful]
    harmful_responses = [verdicts["unsafe"][i]["response"] for i in harmful]
    summary: dict[str, dict] = {}
    rows: list[dict] = []
    for name, source in list(models.items())[1:]:
        aligned, _ = load_model(source)
        check_pair(base, aligned)
        own_verdicts: dict[str, list[dict]] = {}
        own = _responder(run, name, aligned, tokenizer, judge, sampling, own_verdicts)("unsafe", unsafe)
        profiles = {
            "own": kl_profile(response_kl(aligned, base, tokenizer, prompts, own, batch_size=config.batch_size))
        }
        if harmful:
            kl = response_kl(aligned, base, tokenizer, harmful_prompts, harmful_responses, batch_size=config.batch_size)
            profiles["harmful"] = kl_profile(kl)
        prefill = (
            prefill_rates(
                aligned,
                tokenizer,
                harmful_prompts,
                harmful_responses,
                judge,
                judged_prompts=[unsafe[i].prompt for i in harmful],
                tokens=config.prefill,
                sampling=sampling,
            )
            if harmful
            else []
        )
        summary[name] = {**profiles, "prefill": prefill}
        for prefix, profile in profiles.items():
            rows += [
                {"model": name, "prefix": prefix, "position": j, "kl": kl_j, "n": n_j}
                for j, (kl_j, n_j) in enumerate(zip(profile["kl"], profile["n"], strict=True))
            ]
        rows += [{"model": name, **row} for row in prefill]
    plots = {
        "kl": kl_positions(
            run.file("kl_positions.png"),
            {f"{m} ({p})": s[p]["kl"] for m, s in summary.items() for p in ("own", "harmful") if p in s},
            title="KL(aligned ‖ base) per response position, unsafe prompts",
        )
    }
    if harmful:
        plots["prefill"] = harm_curve(
            run.file("prefill_curve.png"),
            {
                m: [(row["prefill_tokens"], row["harmful_rate"], row["ci"]) for row in s["prefill"]]
                for m, s in summary.items()
            },
            xlabel="harmful-response tokens prefilled",
            title="Harmful rate after a prefilled harmful start",
        )
    result = RunResult(
        command="analyze depth",
        models=infos,
        results=rows,
        **judge_fields(judge),
        depth=summary,
        unsafe_prompts=len(unsafe),
        base_harmful=len(harmful),
        plots={key: str(path) for key, path in plots.items()},
    )
    return finish(run, result)


class AttackConfig(JudgedOptions):
    soft_tokens: int = Field(2, ge=1, description="Soft tokens inserted before the prompt's last token.")
    steps: int = Field(10, ge=1, description="Attack steps (SGD, per-token normalised gradients).")
    epsilon: float | None = Field(None, gt=0, description="L2 budget per soft token (default: mean embedding norm).")
    scored: int = Field(10, ge=1, description="Target tokens that must all be predicted for a success.")


@verb("analyze attack", AttackConfig)
def attack(config: AttackConfig) -> RunResult:
    """Local Lipschitzness and the adversarial embedding attack towards the base model's harmful
    responses: success rate, and where attacked activations land in τ, for every model."""
    from disalign.analyses.mechanism import analyze_attack, check_configs
    from disalign.core.models import load_model
    from disalign.judges.validate import judge_fields

    models = config.models()
    reference, evaluated = {}, {}
    for kind in ("safe", "unsafe"):
        reference[kind], evaluated[kind] = _halves(config.records(config.source(kind)), kind)
    judge = config.make_judge()
    infos, run = _open(
        config, "analyze attack", models, {**evaluated, **{f"reference:{k}": v for k, v in reference.items()}}
    )
    base, tokenizer = load_model(models["base"])
    verdicts: dict[str, list[dict]] = {}
    _responder(run, "base", base, tokenizer, judge, config.sampling(), verdicts)("unsafe", evaluated["unsafe"])
    targeted = [
        (record, v["response"])
        for record, v in zip(evaluated["unsafe"], verdicts["unsafe"], strict=True)
        if v["harmful"] and v["response"].strip()
    ]
    if not targeted:
        raise UserError("the base model gave no harmful response to aim the attack at; use more unsafe prompts")
    summary, rows = {}, []
    for name, source in models.items():
        lm = base if name == "base" else load_model(source)[0]
        check_configs(base.config, lm.config, name)
        measured = analyze_attack(
            lm,
            tokenizer,
            reference,
            evaluated["safe"],
            [record for record, _ in targeted],
            [response for _, response in targeted],
            soft_tokens=config.soft_tokens,
            steps=config.steps,
            epsilon=config.epsilon,
            scored=config.scored,
            batch_size=config.batch_size,
            layer_pattern=config.layer_pattern,
            mlp_pattern=config.mlp_pattern,
            seed=config.seed,
        )
        summary[name] = measured
        rows += [
            {"model": name, "input": kind, **rate, "token_accuracy": measured["token_accuracy"][kind]}
            for kind, rate in measured["success"].items()
        ]
    result = RunResult(command="analyze attack", models=infos, results=rows, **judge_fields(judge), attack=summary)
    return finish(run, result)


# The demo's mechanistic section: ordinary analyze runs on the zoo, prompts per set capped so the
# section stays near a minute on two cores.
DEMO_PROMPTS = 100
DEMO_PREFILL = (0, 1, 2, 5)


def demo_mechanism(ctx) -> dict:
    """τ per layer, ΔW's spectrum and effective rank, where each jailbreak family lands, and the
    depth curve, for the base and the three aligned models; each claim of the papers checked."""
    sampling = ctx.sampling
    options = dict(
        world=ctx.zoo,
        limit=DEMO_PROMPTS,
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        batch_size=sampling.batch_size,
        seed=sampling.seed,
    )
    found = clusters(**options, out=ctx.run.file("analyze-clusters"))
    changed = weights(world=ctx.zoo, limit=DEMO_PROMPTS, out=ctx.run.file("analyze-weights"))
    deep = depth(**options, prefill=list(DEMO_PREFILL), out=ctx.run.file("analyze-depth"))
    models: dict[str, dict] = {}
    for name, summary in found.clusters.items():
        last = summary["layers"][-1]
        models[name] = {
            "separation": last["separation"],
            "tau_gap": last["tau_gap"],
            "tau_safe": last["tau_safe"][0],
            "tau_unsafe": last["tau_unsafe"][0],
            "sets": {set_name: value[0] for set_name, value in last["sets"].items()},
            "harmful_rates": {k: v["harmful_rate"] for k, v in summary["harmful_rates"].items()},
        }
        if name in changed.weights:
            moved = changed.weights[name]
            models[name].update(
                effective_rank_fraction=moved["effective_rank_fraction_max"],
                sin_mean=moved["sin_mean"],
                sin_random=moved["sin_random_mean"],
                null_space=moved["null_space"],
            )
        if name in deep.depth:
            profiles = deep.depth[name]
            models[name].update(
                kl_share_first_3={p: profiles[p]["share_first_3"] for p in ("own", "harmful") if p in profiles},
                prefill={row["prefill_tokens"]: row["harmful_rate"] for row in profiles["prefill"]},
            )
    return {"models": models, "checks": found.checks, "claims": mechanism_claims(models, found.checks)}


def mechanism_claims(models: dict[str, dict], checks: dict[str, dict]) -> list[dict]:
    """Each claim of the papers, per aligned model, with whether it holds here and the numbers."""
    claims = []
    for name, check in checks.items():
        if name == "base":
            continue
        model = models[name]
        claims.append(
            {
                "model": name,
                "claim": "last-layer safe/unsafe separation larger than the base's",
                "holds": check["larger_than_base"],
                "evidence": f"Cohen's d {check['separation']:.2f} vs base {check['base_separation']:.2f}; "
                f"gap of means {check['tau_gap']:.2f} vs {check['base_tau_gap']:.2f}",
            }
        )
        if "most_harmful_set" in check:
            claims.append(
                {
                    "model": name,
                    "claim": "the most harmful jailbreak sits closer to the safe cluster than plain unsafe requests",
                    "holds": check["closer_to_safe_than_unsafe"],
                    "evidence": f"{check['most_harmful_set']} ({check['its_harmful_rate']:.0%} harmful): "
                    f"τ {check['its_tau']:.2f} vs unsafe {check['unsafe_tau']:.2f}",
                }
            )
        if model.get("effective_rank_fraction") is not None:
            claims.append(
                {
                    "model": name,
                    "claim": "ΔW's effective rank (90 % of σ²) is a small fraction (≤ 25 %) of the matrix rank",
                    "holds": model["effective_rank_fraction"] <= 0.25,
                    "evidence": f"largest fraction over MLP matrices {model['effective_rank_fraction']:.0%}; "
                    f"column-space sine {model['sin_mean']:.3f} (random {model['sin_random']:.3f})",
                }
            )
        projected = model.get("null_space")
        if projected is not None:
            unsafe_change = projected["unsafe"] / projected["unsafe_before"] - 1
            safe_change = projected["safe"] / projected["safe_before"] - 1
            claims.append(
                {
                    "model": name,
                    "claim": "alignment moves unsafe activations towards W_base's null space, safe ones less",
                    "holds": unsafe_change < 0 and unsafe_change < safe_change,
                    "evidence": f"projection onto W_base's top directions at layer {projected['layer']}: "
                    f"unsafe {unsafe_change:+.0%}, safe {safe_change:+.0%}",
                }
            )
        share = model.get("kl_share_first_3", {}).get("harmful")
        if share is not None:
            claims.append(
                {
                    "model": name,
                    "claim": "KL(aligned ‖ base) after harmful prefixes: over half in the first 3 positions",
                    "holds": share > 0.5,
                    "evidence": f"share in the first 3 positions {share:.0%}",
                }
            )
    return claims


def mechanism_table(section: dict):
    from rich.table import Table

    models = section["models"]
    families = sorted({name for model in models.values() for name in model["sets"]})
    prefill = sorted({k for model in models.values() for k in model.get("prefill", {})})
    table = Table(title="Inside the models: τ at the last layer (MLP), ΔW, depth of alignment")
    for heading in ("model", "separation", "τ safe", "τ unsafe", *(f"τ {f}" for f in families)):
        table.add_column(heading, justify="right")
    for heading in ("ΔW rank90", "KL first 3", *(f"prefill {k}" for k in prefill)):
        table.add_column(heading, justify="right")
    for name, model in models.items():
        fraction = model.get("effective_rank_fraction")
        share = model.get("kl_share_first_3", {}).get("harmful")
        rates = model.get("prefill", {})
        table.add_row(
            name,
            f"{model['separation']:.2f}",
            f"{model['tau_safe']:+.2f}",
            f"{model['tau_unsafe']:+.2f}",
            *(f"{model['sets'][f]:+.2f}" for f in families),
            "" if fraction is None else f"{fraction:.0%}",
            "" if share is None else f"{share:.0%}",
            *("" if rates.get(k) is None else f"{rates[k]:.0%}" for k in prefill),
        )
    return table


def mechanism_notes(section: dict) -> list[str]:
    return [
        f"{claim['model']}: {claim['claim']}: {'holds' if claim['holds'] else 'does NOT hold'} ({claim['evidence']})"
        for claim in section["claims"]
    ]
