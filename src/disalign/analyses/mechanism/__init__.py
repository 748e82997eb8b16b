"""What safety fine-tuning changes inside a model and where in the answer it lives: activation
clusters and weight changes (Jain et al. 2024), depth of alignment (Qi et al. 2024), local
Lipschitzness and the adversarial embedding attack."""

from disalign.analyses.mechanism.clusters import (
    SITES,
    ClusterReport,
    Respond,
    activation_sites,
    analyze_clusters,
    cluster_centres,
    cluster_layers,
    collect,
    probe_accuracy,
    separation,
    tau,
)
from disalign.analyses.mechanism.depth import PREFILL_TOKENS, kl_profile, prefill_rates, response_kl
from disalign.analyses.mechanism.robustness import (
    AttackOptions,
    AttackResult,
    analyze_attack,
    embedding_attack,
    local_lipschitz,
)
from disalign.analyses.mechanism.weights import (
    check_configs,
    check_pair,
    column_space_sines,
    effective_rank,
    matrix_inputs,
    projection_rows,
    projections,
    weight_changes,
)

__all__ = [
    "PREFILL_TOKENS",
    "SITES",
    "AttackOptions",
    "AttackResult",
    "Respond",
    "ClusterReport",
    "activation_sites",
    "analyze_attack",
    "analyze_clusters",
    "check_configs",
    "check_pair",
    "cluster_centres",
    "cluster_layers",
    "collect",
    "column_space_sines",
    "effective_rank",
    "embedding_attack",
    "kl_profile",
    "local_lipschitz",
    "matrix_inputs",
    "prefill_rates",
    "probe_accuracy",
    "projection_rows",
    "projections",
    "response_kl",
    "separation",
    "tau",
    "weight_changes",
]
