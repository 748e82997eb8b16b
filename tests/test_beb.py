"""Behavior Expectation Bounds: each estimator against two Markov chains whose KL, log-ratio
variance and mixture KL are known in closed form, the many-shot power-law fit against synthetic
data with known parameters, the flip point, the theorems' formulas, and the world's personas."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from disalign.analyses.beb.estimators import (
    BoundSettings,
    aligned_length,
    base_length,
    check_lengths,
    estimate,
    fit_power_law,
    observed_flip,
    power_law,
    random_prompt_length,
)
from disalign.analyses.beb.measure import component_curves
from disalign.analyses.beb.settings import Sentence

# Three states and a start token (id 3). Rows are P(next | current); the start row is the initial law.
MINUS = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4], [0.5, 0.3, 0.2]])
PLUS = np.array([[0.2, 0.3, 0.5], [0.3, 0.3, 0.4], [0.1, 0.2, 0.7], [0.2, 0.3, 0.5]])
START, STATES = 3, 3
TINY = 1e-12  # the start token is never emitted; a tiny probability keeps every log finite


def _full(rows: np.ndarray) -> torch.Tensor:
    """(4, 4) log-transition matrix over the vocabulary {0, 1, 2, start}."""
    padded = np.concatenate([rows, np.full((4, 1), TINY)], axis=1)
    return torch.tensor(np.log(padded / padded.sum(1, keepdims=True)))


class Chain(torch.nn.Module):
    """A Markov chain as a causal LM: the logits after each token are the log of its transition row."""

    def __init__(self, rows: np.ndarray):
        super().__init__()
        self.log_rows = _full(rows)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.log_rows[input_ids])


class Mixture(torch.nn.Module):
    """P = α·P₋ + (1−α)·P₊ on whole sequences: next-token law under the posterior weight of P₋."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha, self.minus, self.plus = alpha, _full(MINUS), _full(PLUS)

    def forward(self, input_ids, attention_mask=None):
        prev, nxt = input_ids[:, :-1], input_ids[:, 1:]
        steps = lambda rows: torch.cat(  # noqa: E731
            [torch.zeros(len(input_ids), 1, dtype=rows.dtype), rows[prev, nxt].cumsum(1)], dim=1
        )
        log_odds = math.log(self.alpha / (1 - self.alpha)) + steps(self.minus) - steps(self.plus)
        w = torch.sigmoid(log_odds).unsqueeze(-1)
        mixed = w * self.minus[input_ids].exp() + (1 - w) * self.plus[input_ids].exp()
        return SimpleNamespace(logits=mixed.log())


class TokenSetting:
    """Sentences of one token: the chains' own states."""

    name, context, max_sentence_tokens, exact, judge = "chains", None, 1, {}, ("none", {})
    stop_ids = frozenset(range(STATES))

    def start(self):
        return [START]

    def cues(self, n, seed):
        return [()] * n

    def prompt_ids(self, sentences, target=None):
        return [START, *(i for s in sentences for i in s.ids)]


def _kl(p, q):
    return float((p * np.log(p / q)).sum())


def _exact(lengths, alpha):
    """Exact step KL(P₋‖P₊), Var of log P₋/P₊ and KL(P₋‖P) at each length, by enumerating prefixes."""
    step, variance, model_kl = [], [], []
    for n in lengths:
        moments, kl_step, kl_model = np.zeros(2), 0.0, 0.0
        for prefix in itertools.product(range(STATES), repeat=n):
            path = (START, *prefix)
            p_minus = np.prod([MINUS[a, b] for a, b in itertools.pairwise(path)])
            p_plus = np.prod([PLUS[a, b] for a, b in itertools.pairwise(path)])
            ratio = math.log(p_minus / p_plus)
            moments += p_minus * np.array([ratio, ratio**2])
            last = path[-1]
            kl_step += p_minus * _kl(MINUS[last], PLUS[last])
            w = alpha * p_minus / (alpha * p_minus + (1 - alpha) * p_plus)
            kl_model += p_minus * _kl(MINUS[last], w * MINUS[last] + (1 - w) * PLUS[last])
        step.append(kl_step)
        variance.append(moments[1] - moments[0] ** 2)
        model_kl.append(kl_model)
    return np.array(step), np.array(variance), np.array(model_kl)


LENGTHS = [0, 1, 2, 3, 4]
ALPHA = 0.2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: a second thread only adds synchronisation, ten times slower on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def chain_estimates():
    curves = component_curves(
        TokenSetting(), Chain(MINUS), Chain(PLUS), Mixture(ALPHA), LENGTHS, n_prompts=1500, n_continuations=2
    )
    return curves, estimate(LENGTHS, curves.step_log_ratio, curves.cumulative_log_ratio, curves.model_kl, n_boot=300)


def test_step_kl_and_envelopes_match_the_chains(chain_estimates):
    curves, estimates = chain_estimates
    step, _, _ = _exact(LENGTHS, ALPHA)
    # Per-position KL: one-token sentences make each step exact given its prefix.
    np.testing.assert_allclose(curves.step_log_ratio.mean(0), step, atol=0.02)
    for name, truth in (("beta", step.min()), ("beta_prime", step.max())):
        low, high = estimates[name].ci
        assert low - 0.01 <= truth <= high + 0.01, (name, truth, estimates[name])
        assert estimates[name].value == pytest.approx(truth, abs=0.03)


def test_sigma_is_the_slope_bounding_the_log_ratio_variance(chain_estimates):
    curves, estimates = chain_estimates
    _, variance, _ = _exact(LENGTHS, ALPHA)
    truth = math.sqrt(max(v / n for v, n in zip(variance, LENGTHS, strict=True) if n))
    # A maximum over noisy variances leans upwards, so its percentile interval may just miss the truth.
    low, high = estimates["sigma"].ci
    assert low <= estimates["sigma"].value <= high and high - low < 0.1
    assert estimates["sigma"].value == pytest.approx(truth, rel=0.05)


def test_model_kl_intercept_estimates_log_inverse_alpha(chain_estimates):
    curves, estimates = chain_estimates
    _, _, model_kl = _exact(LENGTHS, ALPHA)
    np.testing.assert_allclose(curves.model_kl.mean(0), model_kl, atol=0.03)
    slope, intercept = np.polyfit(LENGTHS[:3], model_kl[:3], 1)
    low, high = estimates["log_inv_alpha"].ci
    assert low <= intercept <= high
    flip = estimates["predicted_flip"]
    assert flip.ci[0] <= -intercept / slope <= flip.ci[1]


def test_zero_shot_kl_is_log_inverse_alpha_when_components_do_not_overlap():
    disjoint_minus = np.array([[0.5, 0.5, 1e-9]] * 4)
    disjoint_plus = np.array([[1e-9, 1e-9, 1.0]] * 4)
    global MINUS, PLUS
    saved = MINUS, PLUS
    MINUS, PLUS = disjoint_minus, disjoint_plus
    try:
        curves = component_curves(
            TokenSetting(), Chain(MINUS), Chain(PLUS), Mixture(0.05), [0, 1], n_prompts=50, n_continuations=2
        )
    finally:
        MINUS, PLUS = saved
    assert curves.model_kl.mean(0)[0] == pytest.approx(math.log(1 / 0.05), abs=1e-3)
    assert curves.model_kl.mean(0)[1] < 1e-3  # one negative sentence reveals the component


def test_bounds_follow_the_theorems():
    beta, beta_prime, sigma, log_inv_alpha, eps, delta = 2.0, 3.0, 1.5, 3.0, 0.1, 0.2
    l0 = (3.0 + math.log(10) + math.log(4)) / 2.0
    assert base_length(beta, log_inv_alpha, eps) == pytest.approx(l0)
    assert aligned_length(beta, beta_prime, sigma, log_inv_alpha, eps, delta, 4) == pytest.approx(
        l0 + 1.5 * 4 + 0.75 * math.sqrt(4 / 0.2) + 1
    )
    assert random_prompt_length(beta, sigma, log_inv_alpha, eps, delta) == pytest.approx(
        max(2 * l0, 4 * 2.25 / (4 * 0.2))
    )
    assert random_prompt_length(0.5, 3.0, 1.0, eps, 0.01) == pytest.approx(4 * 9 / (0.25 * 0.01))
    assert base_length(0.0, 1.0, eps) == math.inf
    with pytest.raises(ValueError):
        BoundSettings(epsilon=1.5)


def test_length_grid_must_be_increasing_and_non_empty():
    assert list(check_lengths([0, 2, 5])) == [0, 2, 5]
    for bad in ([], [3, 2], [1, 1], [-1, 2]):
        with pytest.raises(ValueError):
            check_lengths(bad)


def test_power_law_fit_recovers_known_parameters():
    shots = [0, 1, 2, 4, 8, 16, 32, 64]
    rng = np.random.default_rng(0)
    truth = {"C": 3.0, "a": 0.7, "K": 0.5}
    n = np.array([max(s, 1) for s in shots], dtype=float)
    nll = power_law(n, truth["C"], truth["a"], truth["K"]) + rng.normal(0, 0.4, size=(300, len(shots)))
    fit = fit_power_law(shots, nll, n_boot=300)
    for name, value in truth.items():
        low, high = fit[name].ci
        assert low <= value <= high, (name, fit[name])
        assert high - low < 0.5 * value + 0.2
    assert fit["rmse"] < 0.1
    with pytest.raises(ValueError):
        fit_power_law([0, 1, 2], nll[:, :3])


def test_observed_flip_is_the_first_k_below_zero():
    rng = np.random.default_rng(1)
    ks = [0, 1, 2, 3, 4]
    p_harmful = np.array([0.1, 0.3, 0.45, 0.7, 0.9])  # the mean 1 − 2p crosses 0 between k = 2 and 3
    behaviour = np.where(rng.random((400, 5)) < p_harmful, -1.0, 1.0)
    flip = observed_flip(ks, behaviour, n_boot=300)
    assert flip.value == 3
    assert flip.ci[0] >= 2 and flip.ci[1] == 3
    never = observed_flip(ks, np.ones((10, 5)), n_boot=50)
    assert never.value == math.inf and never.as_dict()["value"] is None


def test_sentence_needs_one_flag_per_id():
    with pytest.raises(ValueError):
        Sentence((1, 2), (True,))
