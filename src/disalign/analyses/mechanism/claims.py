"""The papers' claims about what alignment changes inside a model (Jain et al. 2024, Qi et al. 2024),
checked on measured models: each says whether it holds here and gives the numbers it rests on."""

from __future__ import annotations

from typing import Any


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
