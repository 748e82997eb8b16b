"""Refusal-direction ablation (Arditi et al. 2024, "abliteration"): find the direction along which
a model writes refusal, and remove it at inference or from the weights."""

from disalign.attacks.ablation.directions import (
    MIN_PROMPTS,
    Directions,
    post_instruction_positions,
    refusal_directions,
)
from disalign.attacks.ablation.edits import (
    ablation_hooks,
    activation_addition,
    orthogonalise,
    residual_writers,
    save_model,
)
from disalign.attacks.ablation.search import (
    NO_EDIT,
    OBJECTIVES,
    SAMPLERS,
    Budget,
    Candidate,
    Measurement,
    Objectives,
    SearchPlan,
    SearchResult,
    Trial,
    choose,
    full_ablation_grid,
    kernel_weights,
    optuna_plan,
    pareto_front,
    plot_pareto,
    search,
)

__all__ = [
    "MIN_PROMPTS",
    "NO_EDIT",
    "OBJECTIVES",
    "SAMPLERS",
    "Budget",
    "Candidate",
    "Directions",
    "Measurement",
    "Objectives",
    "SearchPlan",
    "SearchResult",
    "Trial",
    "ablation_hooks",
    "activation_addition",
    "choose",
    "full_ablation_grid",
    "kernel_weights",
    "optuna_plan",
    "orthogonalise",
    "pareto_front",
    "plot_pareto",
    "post_instruction_positions",
    "refusal_directions",
    "residual_writers",
    "save_model",
    "search",
]
