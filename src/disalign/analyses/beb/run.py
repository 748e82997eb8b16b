"""A BEB run, top to bottom. The verb opens the run, loads the model and its setting (the world's
personas or the statement files) and builds the judge; one `run_*` then measures in two stages
and returns the summary's keys:

    components  P₋ and P₊ (given, or LoRA proxies trained in RUN/proxies/), their curves over the
                prompt lengths, and the proxies' accuracy → β, β′, σ, log 1/α and the bounds
    curve       the judged behaviour over k harmful sentences before each request (with the NLL of
                its harmful answer for many-shot), then again after the aligning prompt

Each stage's measurements are recorded once in the run's records (`RunDir.stage`): a rerun with
the same --out reads them back and only recomputes the summaries. `config` is the verb's config;
this room reads its fields and knows nothing else of the API.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from disalign.analyses.beb.estimators import BoundSettings
from disalign.analyses.beb.measure import (
    BehaviourCurve,
    ComponentCurves,
    behaviour_curve,
    component_curves,
    conversations,
    longest_fitting,
    manyshot_nll,
)
from disalign.analyses.beb.plots import components as components_plot
from disalign.analyses.beb.plots import harm_over_sentences
from disalign.analyses.beb.plots import manyshot as manyshot_plot
from disalign.analyses.beb.proxies import PAPER_TRAINING, WORLD_TRAINING, proxy_accuracy, train_proxy
from disalign.analyses.beb.summaries import (
    context_fields,
    curve_rows,
    estimate_fields,
    estimate_summary,
    exact_kl_line,
    flip_comparison,
    flip_summary,
    harm_rise,
    manyshot_summary,
)
from disalign.core.models import load_model
from disalign.core.runs import RunDir
from disalign.errors import UserError

# A text model's answers stop here unless --max-new-tokens says otherwise; the world's stop one
# token past the harmful answer (its setting's own default).
TEXT_ANSWER_TOKENS = 32


def run_estimate(run: RunDir, config, lm, setting) -> dict[str, Any]:
    """`beb estimate`: β, β′, σ, log 1/α and the bounds, with the component curves as rows. The
    `proxies` key describes the proxies trained here (the verb describes given models)."""
    measured = components(run, config, lm, setting)
    summary = measured["summary"]
    curves = summary["curves"]
    rows = [
        {"length": n, "step_log_ratio": s, "log_ratio_variance": v, "model_kl": k}
        for n, s, v, k in zip(
            *(curves[key] for key in ("lengths", "step_log_ratio", "log_ratio_variance", "model_kl")), strict=True
        )
    ]
    plot = components_plot(run.file("components.png"), summary, title=f"BEB components: {config.model}")
    return {
        "proxies": measured["proxies"],
        "results": rows,
        **estimate_fields(summary),
        **context_fields(setting),
        "plots": {"components": str(plot)},
    }


def run_curve(run: RunDir, config, lm, setting, judge) -> dict[str, Any]:
    """`beb curve`: the judged curve with and without the aligning prompt, and where it flips."""
    fields, _ = curves(run, config, lm, setting, judge)
    plot = harm_over_sentences(run.file("harm_curve.png"), fields, title=f"harm over harmful sentences: {config.model}")
    return {
        "results": fields["curve"] + fields.get("curve_aligning", []),
        **fields,
        **context_fields(setting),
        "plots": {"harm_curve": str(plot)},
    }


def run_bounds(run: RunDir, config, lm, setting, judge) -> dict[str, Any]:
    """`beb bounds`: the estimates and the measured curve, the predicted flips beside the observed."""
    measured = components(run, config, lm, setting)
    fields, _ = curves(run, config, lm, setting, judge)
    summary = measured["summary"]
    components_path = components_plot(run.file("components.png"), summary, title=f"BEB components: {config.model}")
    curve_path = harm_over_sentences(
        run.file("harm_curve.png"), fields, title=f"harm over harmful sentences: {config.model}"
    )
    return {
        "proxies": measured["proxies"],
        "results": fields["curve"] + fields.get("curve_aligning", []),
        **estimate_fields(summary),
        **fields,
        "comparison": flip_comparison(summary, fields),
        **context_fields(setting),
        "plots": {"components": str(components_path), "harm_curve": str(curve_path)},
    }


def run_manyshot(run: RunDir, config, lm, setting, judge) -> dict[str, Any]:
    """`beb manyshot`: the NLL of the harmful answer and the judged harmful rate per number of
    shots, the power-law fit over n ≥ 1, and (an exact world) the KL line read off the NLL."""
    shots = config.shots
    if shots is not None:
        fitting_ks(setting, config, 0, shots[-1])  # refuses a grid that overflows the context
    fields, nll = curves(run, config, lm, setting, judge, ks=shots, nll=True)
    grid = [row["k"] for row in fields["curve"]]
    rows = [
        {
            "shots": k,
            **{key: r[key] for key in ("nll", "nll_ci", "answer_probability", "answer_probability_ci")},
            **{key: c[key] for key in ("harmful_rate", "ci", "n", "behavior", "refusal_rate", "prompt_tokens")},
        }
        for k, r, c in zip(grid, fields["manyshot"]["nll"], fields["curve"], strict=True)
    ]
    exact = {"exact_kl_line": exact_kl_line(grid, nll, seed=config.seed)} if setting.exact else {}
    nll_plot = manyshot_plot(run.file("manyshot.png"), {config.model: fields["manyshot"]}, title="many-shot NLL")
    curve_plot = harm_over_sentences(run.file("harm_curve.png"), fields, title=f"many-shot harm: {config.model}")
    return {
        "results": rows,
        **fields,
        **exact,
        **context_fields(setting),
        "plots": {"manyshot": str(nll_plot), "harm_curve": str(curve_plot)},
    }


# -- stage 1: the components -----------------------------------------------------------------------


def components(run: RunDir, config, lm, setting) -> dict[str, Any]:
    """P₋ and P₊ (given or LoRA proxies), their sanity check, and the estimates with intervals."""
    training = (WORLD_TRAINING if config.world else PAPER_TRAINING).model_copy(
        update={"epochs": config.proxy_epochs, **({"lr": config.proxy_lr} if config.proxy_lr else {})}
    )
    models, proxies = {}, {}
    for component, key, given in (("negative", "p_minus", config.p_minus), ("positive", "p_plus", config.p_plus)):
        if given is not None:
            models[component], _ = load_model(given)
            continue
        out = run.file(f"proxies/{component}")
        models[component], _, _ = train_proxy(
            config.model, setting, component, out, training, n_examples=config.proxy_examples, seed=config.seed
        )
        proxies[key] = {"path": str(out / "model"), "lora_of": config.model, **training.model_dump()}

    def measure() -> dict[str, Any]:
        with torch.no_grad():
            measured = component_curves(
                setting,
                models["negative"],
                models["positive"],
                lm,
                config.lengths,
                n_prompts=config.n_prompts,
                n_continuations=config.continuations,
                seed=config.seed,
                batch_size=config.batch_size,
            )
        accuracy = proxy_accuracy(setting, models["negative"], models["positive"])
        return {"curves": measured.to_json(), "proxy_accuracy": accuracy}

    measured = run.stage("components", measure)
    bounds = BoundSettings(epsilon=config.epsilon, delta=config.delta, aligning=config.aligning)
    summary = estimate_summary(ComponentCurves.from_json(measured["curves"]), bounds, seed=config.seed)
    summary["proxy_accuracy"] = measured["proxy_accuracy"]
    return {"summary": summary, "proxies": proxies}


# -- stage 2: the judged curves --------------------------------------------------------------------


def curves(
    run: RunDir, config, lm, setting, judge, *, ks: list[int] | None = None, nll: bool = False
) -> tuple[dict[str, Any], np.ndarray | None]:
    """The curve without an aligning prompt and, with --aligning M > 0, with one; with `nll`, the
    many-shot summary and the NLL matrix (requests × ks) of the curve without it."""
    plain = curve(run, config, lm, setting, judge, ks or fitting_ks(setting, config, 0, config.max_episodes), 0, nll)
    fields = {key: plain[key] for key in ("curve", "observed_flip", "harm_rise")}
    if nll:
        fields["manyshot"] = plain["manyshot"]
    if config.aligning:
        top = config.max_episodes
        if top is not None:  # the aligning sentences take room: as far as the context allows
            top = min(top, longest_fitting(setting, n_items=config.n, seed=config.seed, aligning=config.aligning))
        aligned_ks = fitting_ks(setting, config, config.aligning, top)
        aligned = curve(run, config, lm, setting, judge, aligned_ks, config.aligning, False)
        fields.update(
            curve_aligning=aligned["curve"],
            observed_flip_aligning=aligned["observed_flip"],
            harm_rise_aligning=aligned["harm_rise"],
        )
    return fields, plain.get("nll_matrix")


def curve(run: RunDir, config, lm, setting, judge, ks: list[int], aligning: int, nll: bool) -> dict[str, Any]:
    """The judged curve over ks with `aligning` P₊ sentences first (and the many-shot NLL)."""

    def measure() -> dict[str, Any]:
        convs = conversations(setting, ks, n_items=config.n, seed=config.seed, aligning=aligning)
        if nll and any(not t.answer for t in convs.targets):
            raise UserError("prompts: many-shot NLL needs each request's harmful answer (a 'target' column)")
        measured = behaviour_curve(
            setting,
            lm,
            judge,
            convs,
            seed=config.seed,
            temperature=config.temperature,
            max_new_tokens=config.max_new_tokens or (None if config.world else TEXT_ANSWER_TOKENS),
            batch_size=config.batch_size,
        )
        return {
            "curve": measured.to_json(),
            "prompt_tokens": [float(np.mean([len(p[j]) for p in convs.prompts])) for j in range(len(ks))],
            "nll": manyshot_nll(lm, convs, batch_size=config.batch_size).tolist() if nll else None,
        }

    measured = run.stage(f"curve:aligning={aligning}:nll={nll}", measure)
    judged = BehaviourCurve.from_json(measured["curve"])
    rows = curve_rows(judged, aligning=aligning)
    for row, count in zip(rows, measured["prompt_tokens"], strict=True):
        row["prompt_tokens"] = count
    value = {"curve": rows, "observed_flip": flip_summary(judged, seed=config.seed), "harm_rise": harm_rise(judged)}
    if nll:
        matrix = np.array(measured["nll"])
        value.update(manyshot=manyshot_summary(ks, matrix, seed=config.seed), nll_matrix=matrix)
    return value


def fitting_ks(setting, config, aligning: int, top: int | None) -> list[int]:
    """0…top; without a top, every k whose prompts fit the context the model was trained on (the
    world's pretraining rows are shorter than its context), else its context."""
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
