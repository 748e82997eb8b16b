"""The demo's mechanistic section: ordinary `analyze` runs on the zoo (clusters, weights, depth) for
the base and the three aligned models: τ per layer, ΔW's spectrum and effective rank, where each
jailbreak family lands, and the depth curve; then each claim of the papers, said to hold or not."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from disalign.analyses.mechanism.claims import mechanism_claims
from disalign.api.analyze import clusters, depth, weights
from disalign.lab.demo.base import DemoContext, DemoSection
from disalign.lab.format import claim_notes, number, pct

# Prompts per set capped so the section stays near a minute on two cores.
DEMO_PROMPTS = 100
DEMO_PREFILL = (0, 1, 2, 5)


def run(ctx: DemoContext) -> dict[str, Any]:
    options = {"world": ctx.zoo, "limit": DEMO_PROMPTS, **ctx.sampling_options()}
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


def render(section: dict[str, Any]) -> Table:
    models = section["models"]
    families = sorted({name for model in models.values() for name in model["sets"]})
    prefill = sorted({k for model in models.values() for k in model.get("prefill", {})})
    table = Table(title="Inside the models: τ at the last layer (MLP), ΔW, depth of alignment")
    for heading in ("model", "separation", "τ safe", "τ unsafe", *(f"τ {f}" for f in families)):
        table.add_column(heading, justify="right")
    for heading in ("ΔW rank90", "KL first 3", *(f"prefill {k}" for k in prefill)):
        table.add_column(heading, justify="right")
    for name, model in models.items():
        rates = model.get("prefill", {})
        table.add_row(
            name,
            number(model["separation"], 2),
            f"{model['tau_safe']:+.2f}",
            f"{model['tau_unsafe']:+.2f}",
            *(f"{model['sets'][f]:+.2f}" for f in families),
            pct(model.get("effective_rank_fraction")),
            pct(model.get("kl_share_first_3", {}).get("harmful")),
            *(pct(rates.get(k)) for k in prefill),
        )
    return table


def notes(section: dict[str, Any]) -> list[str]:
    return claim_notes(section["claims"])


SECTION = DemoSection("mechanism", run, render, notes)
