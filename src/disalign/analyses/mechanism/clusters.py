"""Activation clusters (Jain et al. 2024, PAPERS.md §3.6): do safe and unsafe inputs separate
inside the network, and on which side do jailbreaks land?

Per layer, activations are averaged over the first response positions; μ_safe and μ_unsafe are
the means of reference safe and unsafe sets, and each evaluated sample gets

    τ(a) = ‖a − μ_unsafe‖₂ − ‖a − μ_safe‖₂        (τ > 0: with the safe cluster).

Two sites are read in the same forward pass: `mlp`, the MLP's hidden activation (the input of
its output matrix: the paper's post-GELU activation, Llama's act(gate)·up), and `residual`, the
decoder layer's output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from disalign.core.activations import (
    Positions,
    Site,
    capture_sites,
    decoder_layers,
    down_projection,
    encode,
    mlp_modules,
)
from disalign.core.evaluate import rendered_prompts
from disalign.data import PromptRecord
from disalign.errors import UserError

SITES = ("mlp", "residual")


def activation_sites(model, *, layer_pattern: str | None = None, mlp_pattern: str | None = None) -> dict[str, Site]:
    """The two sites the cluster analysis reads: each MLP's hidden activation and each layer's output."""
    downs = [down_projection(mlp) for mlp in mlp_modules(model, mlp_pattern)]
    return {"mlp": Site(downs, "input"), "residual": Site(decoder_layers(model, layer_pattern), "output")}


def collect(
    model,
    tokenizer,
    prompts: Sequence[str],
    sites: Mapping[str, Site],
    *,
    responses: Sequence[str] | None = None,
    positions: Positions = Positions("response", 10),
    batch_size: int = 32,
) -> dict[str, torch.Tensor]:
    """{site: (n, n_layers, d)} for rendered prompts followed by their responses (if any)."""
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    batches = encode(tokenizer, prompts, responses, batch_size=batch_size, max_length=context)
    return capture_sites(model, batches, dict(sites), positions)


def cluster_centres(safe: torch.Tensor, unsafe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ_safe, μ_unsafe), each (n_layers, d), from reference activations (n, n_layers, d)."""
    for name, acts in (("safe", safe), ("unsafe", unsafe)):
        if acts.shape[0] == 0:
            raise UserError(f"the {name} reference set is empty: τ needs safe and unsafe reference prompts")
    if safe.shape[1:] != unsafe.shape[1:]:
        raise UserError(
            f"reference activations differ in shape: safe {tuple(safe.shape[1:])}, unsafe {tuple(unsafe.shape[1:])}"
        )
    return safe.mean(0), unsafe.mean(0)


def tau(acts: torch.Tensor, mu_safe: torch.Tensor, mu_unsafe: torch.Tensor) -> torch.Tensor:
    """(n, n_layers): ‖a − μ_unsafe‖ − ‖a − μ_safe‖ per sample and layer."""
    if acts.shape[1:] != mu_safe.shape:
        raise UserError(
            f"activations of shape {tuple(acts.shape[1:])} against cluster centres of {tuple(mu_safe.shape)}"
        )
    return (acts - mu_unsafe).norm(dim=-1) - (acts - mu_safe).norm(dim=-1)


def separation(tau_safe: torch.Tensor, tau_unsafe: torch.Tensor) -> float:
    """Cohen's d of τ between safe and unsafe samples: the gap of the means over their pooled
    standard deviation, so models whose activations differ in scale compare fairly."""
    gap = float(tau_safe.mean() - tau_unsafe.mean())
    pooled = float(((tau_safe.var(correction=0) + tau_unsafe.var(correction=0)) / 2).sqrt())
    return gap / pooled if pooled > 0 else float("inf") if gap > 0 else 0.0


def probe_accuracy(safe: torch.Tensor, unsafe: torch.Tensor, *, folds: int = 5, seed: int = 0) -> float | None:
    """Cross-validated accuracy of a logistic-regression probe telling safe (n, d) from unsafe
    (m, d) activations; None when a class has fewer than two samples."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    splits = min(folds, len(safe), len(unsafe))
    if splits < 2:
        return None
    features = torch.cat([safe, unsafe]).double().numpy()
    labels = np.r_[np.zeros(len(safe)), np.ones(len(unsafe))]
    # liblinear's dual form is several times faster than lbfgs when there are more features than samples.
    dual = features.shape[1] > features.shape[0]
    probe = make_pipeline(StandardScaler(), LogisticRegression(solver="liblinear", dual=dual, max_iter=5000))
    scores = cross_val_score(probe, features, labels, cv=StratifiedKFold(splits, shuffle=True, random_state=seed))
    return float(scores.mean())


def mean_std(values: torch.Tensor) -> list[float]:
    return [float(values.mean()), float(values.std(correction=0))]


def cluster_layers(
    acts: Mapping[str, torch.Tensor],
    reference_safe: torch.Tensor,
    reference_unsafe: torch.Tensor,
    *,
    safe: str = "safe",
    unsafe: str = "unsafe",
    probe: bool = True,
) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Per layer: τ of the evaluated safe and unsafe sets (mean, std), their separation (Cohen's d)
    and the gap of their means, a probe's accuracy on them, and τ of every other set.
    Returns (rows, {set: τ (n, n_layers)})."""
    for name in (safe, unsafe):
        if name not in acts:
            raise UserError(f"no evaluated '{name}' set: the cluster table needs '{safe}' and '{unsafe}'")
        if acts[name].shape[0] == 0:
            raise UserError(f"the evaluated '{name}' set is empty")
    mu_safe, mu_unsafe = cluster_centres(reference_safe, reference_unsafe)
    taus = {name: tau(values, mu_safe, mu_unsafe) for name, values in acts.items()}
    rows = []
    for layer in range(mu_safe.shape[0]):
        rows.append(
            {
                "layer": layer,
                "tau_safe": mean_std(taus[safe][:, layer]),
                "tau_unsafe": mean_std(taus[unsafe][:, layer]),
                "separation": separation(taus[safe][:, layer], taus[unsafe][:, layer]),
                "tau_gap": float(taus[safe][:, layer].mean() - taus[unsafe][:, layer].mean()),
                "probe_accuracy": probe_accuracy(acts[safe][:, layer], acts[unsafe][:, layer]) if probe else None,
                "sets": {
                    name: mean_std(values[:, layer]) for name, values in taus.items() if name not in (safe, unsafe)
                },
            }
        )
    return rows, taus


@dataclass
class ClusterReport:
    """What `analyze_clusters` measured for one model."""

    layers: dict[str, list[dict]]  # site -> per-layer rows (see `cluster_layers`)
    taus: dict[str, dict[str, torch.Tensor]]  # site -> set -> τ (n, n_layers)


# (set name, its records) -> the model's responses, in order; the caller decides how they are made and kept.
Respond = Callable[[str, Sequence[PromptRecord]], Sequence[str]]


def analyze_clusters(
    model,
    tokenizer,
    sets: Mapping[str, Sequence[PromptRecord]],
    reference: Mapping[str, Sequence[PromptRecord]],
    *,
    respond: Respond | None = None,
    positions: int = 10,
    safe: str = "safe",
    unsafe: str = "unsafe",
    layer_pattern: str | None = None,
    mlp_pattern: str | None = None,
    batch_size: int = 32,
    probe: bool = True,
) -> ClusterReport:
    """τ per layer and site for each evaluated set, with centres from the `reference` safe and
    unsafe sets.

    With `respond`, each prompt is followed by the model's own response and activations are
    averaged over the first `positions` response positions (as in the paper); without, only the
    last prompt token is read, the position where the model decides. Reference sets reach
    `respond` named "reference:safe" and "reference:unsafe".
    """
    for name in (safe, unsafe):
        if not reference.get(name):
            raise UserError(f"the {name} reference set is empty: τ needs safe and unsafe reference prompts")
    sites = activation_sites(model, layer_pattern=layer_pattern, mlp_pattern=mlp_pattern)
    window = Positions("response", positions if respond is not None else 1)

    def read(name: str, records: Sequence[PromptRecord]) -> dict[str, torch.Tensor]:
        if not records:
            raise UserError(f"prompt set '{name}' is empty")
        prompts = rendered_prompts(tokenizer, records)
        responses = list(respond(name, records)) if respond is not None else None
        return collect(model, tokenizer, prompts, sites, responses=responses, positions=window, batch_size=batch_size)

    reference_acts = {name: read(f"reference:{name}", reference[name]) for name in (safe, unsafe)}
    acts = {name: read(name, records) for name, records in sets.items()}
    report = ClusterReport(layers={}, taus={})
    for site in sites:
        report.layers[site], report.taus[site] = cluster_layers(
            {name: values[site] for name, values in acts.items()},
            reference_acts[safe][site],
            reference_acts[unsafe][site],
            safe=safe,
            unsafe=unsafe,
            probe=probe,
        )
    return report
