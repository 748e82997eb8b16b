"""Metrics: bootstrap intervals, rate and rubric summaries, categories, agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from disalign.core.stats import agreement, bootstrap_ci, per_category, rate_summary, rubric_summary


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible():
    values = np.random.default_rng(3).normal(10, 2, size=400)
    low, high = bootstrap_ci(values, seed=1)
    assert low < values.mean() < high
    # The standard error is 2/sqrt(400) = 0.1, so a 95% interval is about +-0.2 wide.
    assert 0.3 < high - low < 0.5
    assert bootstrap_ci(values, seed=1) == (low, high)
    assert bootstrap_ci(values, seed=2) != (low, high)


def test_bootstrap_ci_of_a_rate_matches_the_normal_approximation():
    values = np.arange(1000) < 300  # p = 0.3
    low, high = bootstrap_ci(values, n_boot=4000)
    half_width = 1.96 * math.sqrt(0.3 * 0.7 / 1000)
    assert low == pytest.approx(0.3 - half_width, abs=0.006)
    assert high == pytest.approx(0.3 + half_width, abs=0.006)


def test_bootstrap_ci_edge_cases():
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    assert bootstrap_ci([4.0]) == (4.0, 4.0)
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0)
    narrow, wide = bootstrap_ci([0, 1] * 50, level=0.5), bootstrap_ci([0, 1] * 50, level=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_rate_summary_ignores_undecided():
    summary = rate_summary([True, False, None, True, None])
    assert summary["harmful_rate"] == pytest.approx(2 / 3)
    assert summary["n"] == 3
    assert 0 <= summary["ci"][0] <= summary["harmful_rate"] <= summary["ci"][1] <= 1
    assert rate_summary([None]) == {"harmful_rate": None, "ci": [None, None], "n": 0}
    assert set(rate_summary([True], key="refusal_rate")) == {"refusal_rate", "ci", "n"}


def test_rate_interval_is_wilson_and_right_at_the_edges():
    low, high = rate_summary([False] * 200)["ci"]
    assert low == 0.0 and high == pytest.approx(0.01884, abs=1e-4)  # Wilson 95 % for 0/200, not [0, 0]
    low, high = rate_summary([True] * 200)["ci"]
    assert high == pytest.approx(1.0) and low == pytest.approx(1 - 0.01884, abs=1e-4)
    # 30/100: z = 1.96 gives (0.2189, 0.3958) by the Wilson formula.
    low, high = rate_summary([True] * 30 + [False] * 70)["ci"]
    assert (low, high) == (pytest.approx(0.2189, abs=1e-4), pytest.approx(0.3958, abs=1e-4))


def test_clustered_rates_resample_whole_prompts():
    # Two prompts, each answered the same way by all 50 seeds: effectively n = 2, so the interval is wide.
    values = [True] * 50 + [False] * 50
    clusters = ["a"] * 50 + ["b"] * 50
    clustered = rate_summary(values, clusters=clusters)["ci"]
    independent = rate_summary(values)["ci"]
    assert clustered[0] <= 0.0 + 1e-9 and clustered[1] >= 1.0 - 1e-9
    assert independent[1] - independent[0] < 0.25


def test_rubric_summary_follows_the_paper():
    summary = rubric_summary([1, 5, 5, 3, None, 1.0])
    assert summary["harmfulness_score"] == pytest.approx(3.0)
    assert summary["harmfulness_rate"] == pytest.approx(0.4)
    assert summary["n"] == 5
    low, high = summary["harmfulness_score_ci"]
    assert 1 <= low <= 3 <= high <= 5
    assert rubric_summary([])["harmfulness_score"] is None


def test_per_category_groups_in_sorted_order():
    result = per_category(["b", "a", "b", "a"], [True, False, False, None])
    assert list(result) == ["a", "b"]
    assert result["a"]["n"] == 1 and result["b"]["harmful_rate"] == 0.5
    scores = per_category(["x", "x"], [5, 3], summarise=rubric_summary)
    assert scores["x"]["harmfulness_score"] == 4.0
    with pytest.raises(ValueError):
        per_category(["a"], [True, False])


def test_agreement_metrics():
    predictions = [True, True, False, False, True, None]
    labels = [True, False, False, False, True, True]
    result = agreement(predictions, labels)
    assert result["n"] == 5
    assert result["accuracy"] == pytest.approx(0.8)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(1.0)
    assert result["f1"] == pytest.approx(0.8)
    # p_o = 0.8, p_e = 0.6*0.4 + 0.4*0.6 = 0.48, kappa = 0.32 / 0.52
    assert result["cohen_kappa"] == pytest.approx(0.32 / 0.52)


def test_agreement_degenerate_cases_give_none_not_nan():
    assert agreement([True, True], [True, True])["cohen_kappa"] is None
    assert agreement([None], [True])["accuracy"] is None
    with pytest.raises(ValueError):
        agreement([True], [True, False])
