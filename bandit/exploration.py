"""Exploration: turn the policy's per-model scores into a probability mass function.

The formulas are Vowpal Wabbit's (``cb_explore_adf``): SquareCB (Foster & Rakhlin,
2020) by default, epsilon-greedy and softmax as options, and greedy for evaluation.
They run over the *combined* score of each model, ``w_q * predicted_quality -
expected_penalty``, so a request that changes the reward weights changes the pmf at
once, and the probability of every choice is known exactly and logged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


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
