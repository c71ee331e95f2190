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
    """Thompson sampling's pmf, estimated from ``draws`` fresh posterior draws.

    Model ``a``'s quality is ``Beta(means[a] * strengths[a], (1 - means[a]) *
    strengths[a])``; each draw scores ``quality_weight * quality - penalties[a]`` and
    counts for its best model. Returned: the share of draws each model won, smoothed
    with one draw spread evenly (so every model keeps a probability of at least
    ``1 / (K * (draws + 1))``). A model is then sampled from this very pmf, so the
    probability a decision logs is exact even though the pmf is an estimate.
    :class:`ThompsonPool` gives the same estimate while keeping its draws between
    decisions.

    >>> rng = np.random.default_rng(0)
    >>> pmf = thompson([0.9, 0.1], [100, 100], [0, 0], quality_weight=1, draws=64, rng=rng)
    >>> round(pmf[0], 3), round(sum(pmf), 6)
    (0.992, 1.0)
    """
    return ThompsonPool(draws).pmf(means, strengths, penalties,
                                   quality_weight=quality_weight, rng=rng)


class ThompsonPool:
    """Posterior draws for one set of models, kept from one decision to the next.

    Drawing 64 Beta variates for each of 11 models is most of a Thompson decision's
    cost, and between two grades of a kind of prompt its posterior hardly moves. A pool
    keeps ``draws`` rows of draws and, at each :meth:`pmf`:

    * redraws the whole column of a model whose posterior strength changed (it was
      graded since);
    * moves a column whose mean alone changed (an established kind's prior mean drifts
      as the regression learns) by that change, clipped to [0, 1];
    * redraws ``refresh`` rows (8 of 64) of every column, a rolling window, so every
      draw is renewed once per ``draws / refresh`` decisions even when nothing is
      learned, and no model is stuck with an unlucky set of draws.

    Every row is a draw from the current posterior, up to the mean shift, so the pmf is
    Thompson sampling's, estimated from ``draws`` draws as :func:`thompson` does, at a
    fraction of the cost; the decision samples from this pmf and logs its exact
    probability.

    >>> pool, rng = ThompsonPool(64), np.random.default_rng(0)
    >>> first = pool.pmf([0.9, 0.1], [100, 100], [0, 0], quality_weight=1, rng=rng)
    >>> again = pool.pmf([0.9, 0.1], [100, 100], [0, 0], quality_weight=1, rng=rng)
    >>> round(first[0], 3), round(again[0], 3)
    (0.992, 0.992)
    """

    def __init__(self, draws: int, refresh: int | None = None) -> None:
        self.draws = draws
        self.refresh = max(1, draws // 8) if refresh is None else min(refresh, draws)
        self._samples = np.empty((draws, 0))  # each column at its draw-time mean
        self._params: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())
        self._means = self._strengths = self._a = self._b = np.empty(0)
        self._shift = np.empty(0)  # current mean - draw-time mean, per column
        self._cursor = 0

    def _update(self, means: Sequence[float], strengths: Sequence[float],
                rng: np.random.Generator) -> bool:
        """Follow new posteriors; ``True`` when the pool was (re)started from scratch."""
        mean = np.clip(np.asarray(means, dtype=np.float64), 1e-3, 1.0 - 1e-3)
        strength = np.maximum(np.asarray(strengths, dtype=np.float64), 1e-3)
        a, b = mean * strength, (1.0 - mean) * strength
        fresh = self._samples.shape[1] != len(mean)
        if fresh:
            self._samples = rng.beta(a, b, size=(self.draws, len(mean)))
            self._means = mean.copy()
        else:
            graded = np.flatnonzero(strength != self._strengths)
            if len(graded):
                self._samples[:, graded] = rng.beta(a[graded], b[graded],
                                                    size=(self.draws, len(graded)))
                self._means[graded] = mean[graded]
        self._strengths, self._a, self._b = strength, a, b
        self._shift = mean - self._means
        return fresh

    def pmf(self, means: Sequence[float], strengths: Sequence[float],
            penalties: Sequence[float], *, quality_weight: float,
            rng: np.random.Generator) -> list[float]:
        """The pmf for these posteriors and penalties (see :func:`thompson`)."""
        k = len(means)
        params = (tuple(means), tuple(strengths))
        fresh = False
        if params != self._params:
            fresh = self._update(means, strengths, rng)
            self._params = params
        shifted = self._shift.any()
        if not fresh:
            # The rolling window, stored at each column's draw-time mean like the rest.
            start = self._cursor
            stop = min(start + self.refresh, self.draws)
            self._samples[start:stop] = rng.beta(self._a, self._b, size=(stop - start, k))
            if shifted:
                self._samples[start:stop] -= self._shift
            self._cursor = stop % self.draws
        samples = np.clip(self._samples + self._shift, 0.0, 1.0) if shifted else self._samples
        scores = samples * quality_weight - np.asarray(penalties, dtype=np.float64)
        wins = np.bincount(scores.argmax(axis=1), minlength=k).tolist()
        return [(w + 1.0 / k) / (self.draws + 1.0) for w in wins]
