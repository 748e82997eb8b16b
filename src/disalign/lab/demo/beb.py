"""The demo's Behavior Expectation Bounds section: for each zoo model, β, β′ and log 1/α from LoRA
proxies (`beb estimate`), the judged harm curve over harmful-persona episodes with and without two
benign ones first and the many-shot NLL fit (`beb manyshot`); then each claim of the papers, said
to hold or not."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from disalign.analyses.beb.claims import beb_claims, flip_text, interval
from disalign.analyses.beb.summaries import ESTIMATE_KEYS, flip_comparison
from disalign.api.beb import estimate, manyshot
from disalign.lab.demo.base import DemoContext, DemoSection
from disalign.lab.format import claim_notes, pct

# Smaller than the verbs' defaults so four models fit the demo's budget; the intervals say what it
# cost. β grows with the proxies' training (towards the world's exact ∞), so only β's measured
# with the same proxy settings compare; the KL line (log 1/α, the predicted flip) hardly moves.
DEMO = {"n": 100, "n_prompts": 12, "continuations": 4, "lengths": [0, 1, 2, 3, 4], "proxy_examples": 60}
POWER_LAW = ("C", "a", "K")


def run(ctx: DemoContext) -> dict[str, Any]:
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


def render(section: dict[str, Any]) -> Table:
    models = section["models"]
    ks = sorted({row["k"] for model in models.values() for row in model["curve"]})
    table = Table(title="Behavior Expectation Bounds: estimates (LoRA proxies), flips, harm over harmful episodes k")
    headings = ("model", "β", "β′", "log 1/α", "flip pred.", "flip obs.", "obs. +aligning", *(f"k={k}" for k in ks))
    for heading in (*headings, *POWER_LAW):
        table.add_column(heading, justify="right")
    for name, model in models.items():
        harm = {row["k"]: row["harmful_rate"] for row in model["curve"]}
        fit = model["fit"]
        table.add_row(
            name,
            interval(model["beta"]),
            f"{model['beta_prime']['value']:.3g}",
            interval(model["log_inv_alpha"]),
            interval(model["predicted_flip"]),
            flip_text(model["observed_flip"]["value"]),
            flip_text(model.get("observed_flip_aligning", {}).get("value")),
            *(pct(harm.get(k)) for k in ks),
            *(f"{fit[key]['value']:.2g}" if isinstance(fit.get(key), dict) else "" for key in POWER_LAW),
        )
    return table


def notes(section: dict[str, Any]) -> list[str]:
    return claim_notes(section["claims"])


SECTION = DemoSection("beb", run, render, notes)
