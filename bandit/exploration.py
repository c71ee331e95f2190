"""Exploration: turn the policy's per-model scores into a probability mass function.

The formulas are Vowpal Wabbit's (``cb_explore_adf``): SquareCB (Foster & Rakhlin,
2020), epsilon-greedy and softmax, and greedy for evaluation; and Thompson sampling over
Beta posteriors of quality (:func:`thompson`).
They run over the *combined* score of each model, ``w_q * predicted_quality -
expected_penalty``, so a request that changes the reward weights changes the pmf at
once, and the probability of every choice is known exactly and logged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def greedy(scores: Sequence[float]) -> list[float]:
    """All mass on the best score (the first one on ties).

    >>> greedy([0.1, 0.7, 0.7])
    [0.0, 1.0, 0.0]
    """
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return [1.0 if i == best else 0.0 for i in range(len(scores))]


def epsilon_greedy(scores: Sequence[float], epsilon: float) -> list[float]:
    """``epsilon`` spread uniformly, the rest on the best score.

    >>> [round(p, 3) for p in epsilon_greedy([0.0, 1.0], 0.2)]
    [0.1, 0.9]
    """
    k = len(scores)
    pmf = [epsilon / k] * k
    pmf[greedy(scores).index(1.0)] += 1.0 - epsilon
    return pmf


def softmax(scores: Sequence[float], lam: float) -> list[float]:
    """``p_a ∝ exp(lam * score_a)``.

    >>> [round(p, 3) for p in softmax([0.0, 0.0], 5.0)]
    [0.5, 0.5]
    """
    top = max(scores)
    exps = [math.exp(lam * (s - top)) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def squarecb(scores: Sequence[float], gamma: float) -> list[float]:
    """SquareCB's inverse-gap weighting: ``p_a = 1 / (K + gamma * (best - score_a))``.

    The best model takes the remaining mass. ``gamma`` grows with the amount learned,
    so exploration narrows as the policy becomes sure.

    >>> [round(p, 3) for p in squarecb([1.0, 0.5, 0.0], gamma=10.0)]
    [0.798, 0.125, 0.077]
    """
    k = len(scores)
    best = greedy(scores).index(1.0)
    top = scores[best]
    pmf = [0.0] * k
    for i, s in enumerate(scores):
        if i != best:
            pmf[i] = 1.0 / (k + gamma * (top - s))
    pmf[best] = max(0.0, 1.0 - sum(pmf))
    return pmf


def thompson(
    means: Sequence[float],
    strengths: Sequence[float],
    penalties: Sequence[float],
    *,
    quality_weight: float,
    draws: int,
    rng: np.random.Generator,
) -> list[float]:
    """Thompson sampling's pmf, estimated from ``draws`` posterior draws.

    Model ``a``'s quality is ``Beta(means[a] * strengths[a], (1 - means[a]) *
    strengths[a])``; each draw scores ``quality_weight * quality - penalties[a]`` and
    counts for its best model. Returned: the share of draws each model won, smoothed
    with one draw spread evenly (so every model keeps a probability of at least
    ``1 / (K * (draws + 1))``). A model is then sampled from this very pmf, so the
    probability a decision logs is exact even though the pmf is an estimate.

    >>> rng = np.random.default_rng(0)
    >>> pmf = thompson([0.9, 0.1], [100, 100], [0, 0], quality_weight=1, draws=64, rng=rng)
    >>> round(pmf[0], 3), round(sum(pmf), 6)
    (0.992, 1.0)
    """
    k = len(means)
    mean = np.clip(np.asarray(means, dtype=np.float64), 1e-3, 1.0 - 1e-3)
    strength = np.maximum(np.asarray(strengths, dtype=np.float64), 1e-3)
    pen = np.asarray(penalties, dtype=np.float64)
    # Only models that can still win are drawn (Beta draws are most of the cost): a
    # model whose score 6 standard deviations up is below another's 6 down would win
    # fewer than one draw in a billion.
    spread = 6.0 * np.sqrt(mean * (1.0 - mean) / (strength + 1.0))
    upper = quality_weight * np.minimum(1.0, mean + spread) - pen
    lower = quality_weight * np.maximum(0.0, mean - spread) - pen
    live = np.flatnonzero(upper >= lower.max())
    wins = np.zeros(k)
    if len(live) == 1:
        wins[live[0]] = draws
    else:
        # Exact Beta draws: a normal approximation with the same variance (four times
        # cheaper) lost 3-6 points of cost on the RouterBench replay; near a quality of
        # 1 the Beta's skew matters.
        m, n = mean[live], strength[live]
        sample = rng.beta(m * n, (1.0 - m) * n, size=(draws, len(live)))
        scores = quality_weight * sample - pen[live]
        wins[live] = np.bincount(np.argmax(scores, axis=1), minlength=len(live))
    return [(float(w) + 1.0 / k) / (draws + 1.0) for w in wins]
