"""What alignment did to the MLP weights (Jain et al. 2024, PAPERS.md §3.6): ΔW = W_aligned − W_base.

Per MLP matrix (every matrix is read as (out_features, in_features)):
  - the singular values of ΔW and its effective rank: the fewest directions holding `share` of Σσ²;
  - the column-space test: for each kept left singular vector u of the mean-centred W_aligned,
    sin∠(u, P_base u), where P_base projects onto the kept subspace of the mean-centred W_base
    (near 0: alignment kept the column space). `sin_random` is what a random unit vector would
    give against a subspace of that dimension, the value to compare with;
  - the projections σ_j·cos(a, v_j) of activations a entering the matrix onto its top right
    singular directions v_j: the null-space claim says unsafe inputs project weakly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import torch

from disalign.analyses.mechanism.clusters import collect
from disalign.core.activations import Positions, Site, down_projection, mlp_matrices, mlp_modules
from disalign.errors import UserError

_SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "n_embd", "n_layer", "n_inner")


def check_configs(base_config, other_config, what: str = "aligned") -> None:
    """Two model configs name one architecture and one shape; else one line naming what differs."""
    kinds = [getattr(c, "model_type", None) or type(c).__name__ for c in (base_config, other_config)]
    if kinds[0] != kinds[1]:
        raise UserError(f"base and {what} models differ in architecture: {kinds[0]} vs {kinds[1]}")
    for field in _SHAPE_FIELDS:
        values = [getattr(c, field, None) for c in (base_config, other_config)]
        if values[0] != values[1]:
            raise UserError(f"base and {what} models differ in {field}: {values[0]} vs {values[1]}")


def check_pair(base, aligned) -> None:
    """Both models must be one architecture with the same parameter shapes; else one line naming a difference."""
    check_configs(base.config, aligned.config)
    shapes = [{name: tuple(p.shape) for name, p in m.named_parameters()} for m in (base, aligned)]
    for name in sorted(shapes[0].keys() | shapes[1].keys()):
        first, second = shapes[0].get(name), shapes[1].get(name)
        if first != second:
            raise UserError(f"base and aligned models differ in shape at {name}: {first} vs {second}")


def effective_rank(singular_values: torch.Tensor, share: float = 0.9) -> int:
    """The smallest k whose top-k singular values hold `share` of Σσ² (0 for a zero matrix)."""
    if not 0 < share <= 1:
        raise UserError(f"share of σ² must be in (0, 1], not {share}")
    energy = singular_values.double() ** 2
    total = float(energy.sum())
    if total == 0:
        return 0
    cumulative = torch.cumsum(energy, 0) / total
    # A tolerance keeps an exact share (say 0.9 of a rank-2 matrix built as 0.9/0.1) from rounding up.
    return int((cumulative < share - 1e-12).sum()) + 1


def _kept_left_vectors(matrix: torch.Tensor, share: float) -> torch.Tensor:
    centred = matrix.double() - matrix.double().mean(1, keepdim=True)
    left, sigma, _ = torch.linalg.svd(centred, full_matrices=False)
    return left[:, : max(1, effective_rank(sigma, share))]


def column_space_sines(aligned: torch.Tensor, base: torch.Tensor, share: float = 0.9) -> tuple[torch.Tensor, float]:
    """sin∠(u, P_base u) for each kept left singular vector u (a column of U) of the mean-centred
    aligned matrix, and the sine a random unit vector would have against the base's kept subspace."""
    if aligned.shape != base.shape:
        raise UserError(f"matrices differ in shape: {tuple(aligned.shape)} vs {tuple(base.shape)}")
    kept_aligned = _kept_left_vectors(aligned, share)
    kept_base = _kept_left_vectors(base, share)
    inside = kept_base @ (kept_base.T @ kept_aligned)
    sines = (1 - (inside * kept_aligned).sum(0).clamp(max=1)).clamp(min=0).sqrt()
    return sines.float(), math.sqrt(1 - kept_base.shape[1] / base.shape[0])


def projections(matrix: torch.Tensor, acts: torch.Tensor, top: int = 15) -> torch.Tensor:
    """(n, top): σ_j·cos(a, v_j) for activations (n, in_features) and the matrix's top right singular vectors."""
    if acts.shape[-1] != matrix.shape[1]:
        raise UserError(f"activations of width {acts.shape[-1]} cannot enter a matrix with {matrix.shape[1]} inputs")
    _, sigma, right = torch.linalg.svd(matrix.double(), full_matrices=False)
    top = min(top, sigma.shape[0])
    unit = acts.double() / acts.double().norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return (sigma[:top] * (unit @ right[:top].T)).float()


def matrix_pairs(
    base, aligned, mlp_pattern: str | None = None
) -> Iterator[tuple[int, str, torch.Tensor, torch.Tensor]]:
    """(layer, matrix name, base weight, aligned weight) of every MLP matrix of two models of one shape."""
    check_pair(base, aligned)
    for layer, (mlp_base, mlp_aligned) in enumerate(
        zip(mlp_modules(base, mlp_pattern), mlp_modules(aligned, mlp_pattern), strict=True)
    ):
        matrices_aligned = mlp_matrices(mlp_aligned)
        for name, w_base in mlp_matrices(mlp_base).items():
            yield layer, name, w_base, matrices_aligned[name]


def weight_changes(base, aligned, *, mlp_pattern: str | None = None, share: float = 0.9, keep: int = 64) -> list[dict]:
    """One row per (layer, MLP matrix): how much it moved, ΔW's spectrum (top `keep` singular
    values and the share of Σσ² they hold, cumulatively) and effective rank, and the column-space test."""
    rows = []
    for layer, name, w_base, w_aligned in matrix_pairs(base, aligned, mlp_pattern):
        delta = (w_aligned.double() - w_base.double()).cpu()
        sigma = torch.linalg.svdvals(delta)
        total = float((sigma**2).sum())
        k = effective_rank(sigma, share)
        sines, random_sine = column_space_sines(w_aligned.cpu(), w_base.cpu(), share)
        full_rank = min(delta.shape)
        rows.append(
            {
                "layer": layer,
                "matrix": name,
                "shape": list(delta.shape),
                "full_rank": full_rank,
                "relative_change": float(delta.norm() / w_base.double().norm().clamp(min=1e-12)),
                "effective_rank": k,
                "effective_rank_fraction": k / full_rank,
                "top_share": float(sigma[0] ** 2) / total if total else None,
                "singular_values": [float(s) for s in sigma[:keep]],
                "cumulative_share": [float(c) for c in (torch.cumsum(sigma**2, 0) / total)[:keep]] if total else [],
                "sin_mean": float(sines.mean()),
                "sin_max": float(sines.max()),
                "sin_random": random_sine,
            }
        )
    return rows


def projection_rows(
    base,
    aligned,
    inputs: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    mlp_pattern: str | None = None,
    top: int = 15,
) -> list[dict]:
    """Per (layer, matrix, which ∈ {delta, base, aligned}): mean |σ_j·cos(a, v_j)| over the top
    directions for each group of activations. `inputs[group][width]` holds (n, n_layers, width)
    activations entering matrices with `width` inputs (the MLP input, or its hidden activation)."""
    rows = []
    for layer, name, w_base, w_aligned in matrix_pairs(base, aligned, mlp_pattern):
        candidates = {"delta": w_aligned.double() - w_base.double(), "base": w_base, "aligned": w_aligned}
        for which, matrix in candidates.items():
            row = {"layer": layer, "matrix": name, "which": which}
            for group, by_width in inputs.items():
                acts = by_width.get(matrix.shape[1])
                if acts is None:
                    raise UserError(f"no activations of width {matrix.shape[1]} for matrix {name}")
                profile = projections(matrix.cpu(), acts[:, layer], top).abs()
                row[group] = float(profile.mean())
                row[f"{group}_profile"] = [float(v) for v in profile.mean(0)]
            rows.append(row)
    return rows


def matrix_inputs(
    model, tokenizer, prompts, *, mlp_pattern: str | None = None, batch_size: int = 32
) -> dict[int, torch.Tensor]:
    """{width: (n, n_layers, width)}: what enters each MLP's matrices at the last prompt token of
    rendered prompts (the MLP input, read by gate/up/c_fc, and its hidden activation, read by
    down/c_proj), keyed by width so each matrix finds its own."""
    mlps = mlp_modules(model, mlp_pattern)
    sites = {"input": Site(mlps, "input"), "hidden": Site([down_projection(m) for m in mlps], "input")}
    acts = collect(model, tokenizer, prompts, sites, positions=Positions("response", 1), batch_size=batch_size)
    return {values.shape[-1]: values for values in acts.values()}


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
