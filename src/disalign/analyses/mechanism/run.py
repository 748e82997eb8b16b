"""The mechanism analyses, top to bottom. The verb resolves the models (name → source, base first),
reads the prompt sets, builds the judge and opens the run; one `run_*` then walks the models and
returns the summary's keys:

    clusters  τ per layer of every prompt set against the safe/unsafe centres of the reference
              halves, the separation and a probe, and each set's harmful rate, per model
    weights   ΔW = W_aligned − W_base per MLP matrix: its spectrum, effective rank, column space,
              and where safe and unsafe activations project before and after alignment
    depth     KL(aligned ‖ base) per response position, and the harmful rate after a prefilled
              harmful start of the base model's harmful responses
    attack    local Lipschitzness and the embedding attack towards the base's harmful responses

Safe and unsafe sources are split in two (`reference_halves`): the first half gives the cluster
centres, the second is scored. Responses are generated and judged once per prompt and kept in the
run's records, so a rerun reads them back. `config` is the verb's config; this room reads its
fields and knows nothing else of the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from disalign.analyses.mechanism.claims import cluster_checks
from disalign.analyses.mechanism.clusters import analyze_clusters
from disalign.analyses.mechanism.depth import kl_profile, prefill_rates, response_kl
from disalign.analyses.mechanism.plots import kl_positions, spectrum, tau_layers
from disalign.analyses.mechanism.robustness import analyze_attack
from disalign.analyses.mechanism.weights import (
    check_configs,
    check_pair,
    matrix_inputs,
    null_space,
    projection_rows,
    weight_changes,
)
from disalign.core.activations import decoder_layers, select_layers
from disalign.core.evaluate import chat_responder, generate_and_judge, rendered_prompts, summarise
from disalign.core.models import load_merged
from disalign.core.plots import harm_curve
from disalign.core.runs import RunDir
from disalign.data import PromptRecord
from disalign.errors import UserError

RATE_KEYS = ("harmful_rate", "ci", "n", "refusal_rate")


@dataclass(frozen=True)
class Halves:
    """The prompt sets of `clusters` and `attack`: `reference` gives the cluster centres, `evaluated`
    is scored (safe and unsafe split by `reference_halves`, any further set whole)."""

    reference: dict[str, list[PromptRecord]]
    evaluated: dict[str, list[PromptRecord]]

    def prompt_sets(self) -> dict[str, list[PromptRecord]]:
        """Every set the run reads, each reference half as `reference:KIND`."""
        return {**self.evaluated, **{f"reference:{kind}": records for kind, records in self.reference.items()}}


def reference_halves(records: list[PromptRecord], kind: str) -> tuple[list[PromptRecord], list[PromptRecord]]:
    """(reference, evaluated): the first half gives the cluster centres, the second is scored."""
    if len(records) < 4:
        raise UserError(
            f"{kind}: {len(records)} prompts; need at least 4 (half for the cluster centres, half to score)"
        )
    middle = len(records) // 2
    return records[:middle], records[middle:]


def run_clusters(run: RunDir, config, models: dict[str, str], halves: Halves, judge) -> dict[str, Any]:
    """`analyze clusters`: per model, τ per layer (MLP and residual) of every evaluated set and,
    with a judge, each set's harmful rate; then the checks against the base."""
    summary: dict[str, dict] = {}
    rows: list[dict] = []
    base_config = None
    for name, source in models.items():
        lm, tokenizer = load_merged(source)
        base_config = base_config or lm.config
        check_configs(base_config, lm.config, name)
        chosen = select_layers(decoder_layers(lm, config.layer_pattern), config.layers)
        verdicts: dict[str, list[dict]] = {}
        respond = responder(run, name, lm, tokenizer, judge, config.sampling(), verdicts) if judge else None
        report = analyze_clusters(
            lm,
            tokenizer,
            halves.evaluated,
            halves.reference,
            respond=respond,
            positions=config.positions,
            layer_pattern=config.layer_pattern,
            mlp_pattern=config.mlp_pattern,
            batch_size=config.batch_size,
            probe=config.probe,
        )
        rates = {set_name: summarise(verdicts[set_name]) for set_name in halves.evaluated if set_name in verdicts}
        summary[name] = {
            "layers": [report.layers["mlp"][i] for i in chosen],
            "residual_layers": [report.layers["residual"][i] for i in chosen],
            "harmful_rates": {k: {key: v[key] for key in RATE_KEYS} for k, v in rates.items()},
        }
        for site, key in (("mlp", "layers"), ("residual", "residual_layers")):
            rows += [{"model": name, "site": site, **row} for row in summary[name][key]]
        rows += [{"model": name, "set": set_name, **summary[name]["harmful_rates"][set_name]} for set_name in rates]
    mlp_plot = tau_layers(
        run.file("tau_layers.png"), {m: s["layers"] for m, s in summary.items()}, title="τ per layer: MLP activations"
    )
    residual_plot = tau_layers(
        run.file("tau_layers_residual.png"),
        {m: s["residual_layers"] for m, s in summary.items()},
        title="τ per layer: residual stream",
    )
    return {
        "results": rows,
        "clusters": summary,
        "checks": cluster_checks(summary),
        "plots": {"mlp": str(mlp_plot), "residual": str(residual_plot)},
    }


def run_weights(
    run: RunDir, config, models: dict[str, str], prompt_sets: dict[str, list[PromptRecord]]
) -> dict[str, Any]:
    """`analyze weights`: ΔW of each aligned model against the base, matrix by matrix, and (with
    prompt sets) the projections of their activations onto the top singular directions."""
    base, tokenizer = load_merged(models["base"])

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
        aligned, _ = load_merged(source)
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
    return {"results": rows, "weights": summary, "plots": {"spectrum": str(plot)}}


def run_depth(run: RunDir, config, models: dict[str, str], unsafe: list[PromptRecord], judge) -> dict[str, Any]:
    """`analyze depth`: per aligned model, KL(aligned ‖ base) per position after its own responses
    and after the base's harmful ones, and the harmful rate with k harmful tokens prefilled."""
    sampling = config.sampling()
    base, tokenizer = load_merged(models["base"])
    prompts = rendered_prompts(tokenizer, unsafe)
    verdicts: dict[str, list[dict]] = {}
    responder(run, "base", base, tokenizer, judge, sampling, verdicts)("unsafe", unsafe)
    harmful = [i for i, record in enumerate(verdicts["unsafe"]) if record["harmful"] and record["response"].strip()]
    harmful_prompts = [prompts[i] for i in harmful]
    harmful_responses = [verdicts["unsafe"][i]["response"] for i in harmful]
    summary: dict[str, dict] = {}
    rows: list[dict] = []
    for name, source in list(models.items())[1:]:
        aligned, _ = load_merged(source)
        check_pair(base, aligned)
        own = responder(run, name, aligned, tokenizer, judge, sampling, {})("unsafe", unsafe)
        profiles = {
            "own": kl_profile(response_kl(aligned, base, tokenizer, prompts, own, batch_size=config.batch_size))
        }
        prefill = []
        if harmful:
            kl = response_kl(aligned, base, tokenizer, harmful_prompts, harmful_responses, batch_size=config.batch_size)
            profiles["harmful"] = kl_profile(kl)
            prefill = prefill_rates(
                aligned,
                tokenizer,
                harmful_prompts,
                harmful_responses,
                judge,
                judged_prompts=[unsafe[i].prompt for i in harmful],
                tokens=config.prefill,
                sampling=sampling,
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
    return {
        "results": rows,
        "depth": summary,
        "unsafe_prompts": len(unsafe),
        "base_harmful": len(harmful),
        "plots": {key: str(path) for key, path in plots.items()},
    }


def run_attack(run: RunDir, config, models: dict[str, str], halves: Halves, judge) -> dict[str, Any]:
    """`analyze attack`: the base's harmful responses to the evaluated unsafe half are the targets;
    every model's Lipschitzness, attack success and where attacked activations land in τ."""
    base, tokenizer = load_merged(models["base"])
    verdicts: dict[str, list[dict]] = {}
    responder(run, "base", base, tokenizer, judge, config.sampling(), verdicts)("unsafe", halves.evaluated["unsafe"])
    targeted = [
        (record, v["response"])
        for record, v in zip(halves.evaluated["unsafe"], verdicts["unsafe"], strict=True)
        if v["harmful"] and v["response"].strip()
    ]
    if not targeted:
        raise UserError("the base model gave no harmful response to aim the attack at; use more unsafe prompts")
    summary, rows = {}, []
    for name, source in models.items():
        lm = base if name == "base" else load_merged(source)[0]
        check_configs(base.config, lm.config, name)
        measured = analyze_attack(
            lm,
            tokenizer,
            halves.reference,
            halves.evaluated["safe"],
            [record for record, _ in targeted],
            [response for _, response in targeted],
            config,
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
    return {"results": rows, "attack": summary}


def responder(run: RunDir, model_name: str, lm, tokenizer, judge, sampling, verdicts: dict[str, list[dict]]):
    """(set, records) -> responses, generated and judged once per prompt and kept in the run's
    records (a rerun reads them back); the judged records land in `verdicts[set]`."""
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
