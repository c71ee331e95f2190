"""Off-policy evaluation: what a target policy would have earned on logged traffic.

Every logged decision carries the probability ``mu`` with which the logging policy chose
its model. For a target policy ``pi`` that gives the logged model probability ``p`` on the
logged context and actions, the importance weight is ``w = p / mu`` and

* **IPS** averages ``w * r``: unbiased whenever ``mu > 0`` wherever ``pi > 0``;
* **SNIPS** divides ``sum(w * r)`` by ``sum(w)`` instead of ``n``: slightly biased,
  usually much lower variance, and invariant to a constant shift of the reward;
* **DR** (doubly robust) starts from a reward model ``q(x, a)``, takes its expectation under
  ``pi`` and corrects it with ``w * (r - q(x, a_logged))``: unbiased if either the
  propensities or the reward model are right, lower variance than IPS when ``q`` is good.

Intervals are 95% normal-approximation intervals, ``value +/- 1.96 * se`` with ``se`` the
sample standard deviation of the per-sample terms over ``sqrt(n)`` (for SNIPS the terms
are its delta-method influence values ``w * (r - V) / mean(w)``). They assume the logged
samples are independent and are too narrow when a few huge weights dominate: read the
effective sample size ``ess = sum(w)^2 / sum(w^2)`` next to them.

The target is evaluated on the *logged* actions (the models that were eligible then), so a
model added to the catalog later cannot be credited with traffic it never saw.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from bandit.decision import Action, Decision
from bandit.errors import PolicyError
from bandit.features import Context

Z95 = 1.959963984540054
Array = npt.NDArray[np.float64]
QHat = Callable[[Decision, str], float]


class Scorer(Protocol):
    """Anything that gives a pmf over actions, like :meth:`bandit.policy.Policy.scores`."""

    def scores(self, context: Context, actions: tuple[Action, ...]) -> list[float]: ...


class LoggedLike(Protocol):
    """A logged decision with its reward (``feedback.store.LoggedExample`` is one)."""

    @property
    def decision(self) -> Decision: ...

    @property
    def reward(self) -> float: ...


@dataclass(frozen=True)
class Estimate:
    """A point estimate of a policy's mean reward with its 95% interval.

    >>> Estimate.of_terms([1.0, 0.0, 1.0, 0.0]).value
    0.5
    """

    value: float
    low: float
    high: float
    stderr: float
    n: int

    @classmethod
    def of_terms(cls, terms: npt.ArrayLike, *, center: float | None = None) -> Estimate:
        """Mean of ``terms`` (or ``center``) with a normal interval from their spread."""
        t = np.asarray(terms, dtype=float)
        n = int(t.size)
        if n == 0:
            nan = float("nan")
            return cls(nan, nan, nan, nan, 0)
        value = float(t.mean()) if center is None else float(center)
        se = float(t.std(ddof=1) / math.sqrt(n)) if n > 1 else float("inf")
        return cls(value, value - Z95 * se, value + Z95 * se, se, n)

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high,
                "stderr": self.stderr, "n": float(self.n)}


def _check(rewards: npt.ArrayLike, propensities: npt.ArrayLike,
           target: npt.ArrayLike) -> tuple[Array, Array]:
    r = np.asarray(rewards, dtype=float)
    mu = np.asarray(propensities, dtype=float)
    p = np.asarray(target, dtype=float)
    if not (r.shape == mu.shape == p.shape and r.ndim == 1):
        raise PolicyError("ope: rewards, propensities and target probabilities must be "
                          f"1-d arrays of one length, got {r.shape}, {mu.shape}, {p.shape}")
    if np.any(mu <= 0) or np.any(mu > 1):
        raise PolicyError("ope: logged propensities must be in (0, 1]")
    if np.any(p < 0) or np.any(p > 1 + 1e-9):
        raise PolicyError("ope: target probabilities must be in [0, 1]")
    return r, p / mu


def ips(rewards: npt.ArrayLike, propensities: npt.ArrayLike,
        target: npt.ArrayLike) -> Estimate:
    """Inverse propensity scoring: ``mean(p / mu * r)``.

    ``target[i]`` is the target's probability of the logged action of sample ``i``.

    >>> ips([1.0, 0.0, 1.0], [0.5, 0.5, 0.5], [1.0, 0.0, 0.0]).value
    0.6666666666666666
    """
    r, w = _check(rewards, propensities, target)
    return Estimate.of_terms(w * r)


def snips(rewards: npt.ArrayLike, propensities: npt.ArrayLike,
          target: npt.ArrayLike) -> Estimate:
    """Self-normalised IPS: ``sum(w * r) / sum(w)`` with ``w = p / mu``.

    >>> snips([1.0, 0.0, 1.0], [0.5, 0.5, 0.5], [1.0, 0.0, 0.0]).value
    1.0
    """
    r, w = _check(rewards, propensities, target)
    if w.size == 0 or w.sum() <= 0:
        nan = float("nan")
        return Estimate(nan, nan, nan, nan, int(w.size))
    value = float((w * r).sum() / w.sum())
    return Estimate.of_terms(w * (r - value) / w.mean() + value, center=value)


def doubly_robust(rewards: npt.ArrayLike, propensities: npt.ArrayLike, target: npt.ArrayLike,
                  *, q_logged: npt.ArrayLike, q_target: npt.ArrayLike) -> Estimate:
    """Doubly robust: ``mean(q_target + p / mu * (r - q_logged))``.

    ``q_logged[i]`` is the reward model's prediction for the logged action of sample ``i``
    and ``q_target[i]`` its expectation under the target, ``sum_a pi(a | x_i) q(x_i, a)``.

    >>> doubly_robust([1.0, 0.0], [0.5, 0.5], [1.0, 0.0],
    ...               q_logged=[0.5, 0.5], q_target=[0.5, 0.5]).value
    1.0
    """
    r, w = _check(rewards, propensities, target)
    ql = np.asarray(q_logged, dtype=float)
    qt = np.asarray(q_target, dtype=float)
    if not ql.shape == qt.shape == r.shape:
        raise PolicyError("ope: q_logged and q_target must match the rewards' shape")
    return Estimate.of_terms(qt + w * (r - ql))


# -- reward model ---------------------------------------------------------------------


def _cell(context: Context) -> tuple[str, ...]:
    return tuple(sorted(context.namespaces.get("t", ())))


@dataclass
class MeanRewardModel:
    """``q(x, a)``: the mean logged reward of model ``a`` in the context's tag cell.

    Cells are the context's ``t`` tags (tenant, task, script, language). A cell mean is
    shrunk toward the model's mean and that toward the global mean, each with the weight
    of ``prior`` pseudo-observations, so sparse cells fall back gracefully.

    >>> q = MeanRewardModel.fit([("a", ("task=x",), 1.0), ("b", ("task=x",), 0.0)], prior=0)
    >>> q.predict("a", ("task=x",)), q.predict("c", ())
    (1.0, 0.5)
    """

    prior: float = 2.0
    global_mean: float = 0.0
    model_stats: dict[str, list[float]] = field(default_factory=dict)
    cell_stats: dict[tuple[str, tuple[str, ...]], list[float]] = field(default_factory=dict)

    @classmethod
    def fit(cls, rows: Iterable[tuple[str, tuple[str, ...], float]], *,
            prior: float = 2.0) -> MeanRewardModel:
        """Fit on ``(model, cell, reward)`` rows."""
        out = cls(prior=prior)
        total, n = 0.0, 0
        for model, cell, r in rows:
            total, n = total + r, n + 1
            out.model_stats.setdefault(model, [0.0, 0.0])
            out.model_stats[model][0] += 1
            out.model_stats[model][1] += r
            out.cell_stats.setdefault((model, cell), [0.0, 0.0])
            out.cell_stats[(model, cell)][0] += 1
            out.cell_stats[(model, cell)][1] += r
        out.global_mean = total / n if n else 0.0
        return out

    @classmethod
    def fit_logs(cls, logs: Iterable[LoggedLike], *, prior: float = 2.0) -> MeanRewardModel:
        return cls.fit(((x.decision.model, _cell(x.decision.context), float(x.reward))
                        for x in logs), prior=prior)

    def predict(self, model: str, cell: tuple[str, ...]) -> float:
        k = self.prior
        mn, ms = self.model_stats.get(model, [0.0, 0.0])
        model_mean = (ms + k * self.global_mean) / (mn + k) if mn + k > 0 else self.global_mean
        cn, cs = self.cell_stats.get((model, cell), [0.0, 0.0])
        return (cs + k * model_mean) / (cn + k) if cn + k > 0 else model_mean

    def __call__(self, decision: Decision, model: str) -> float:
        return self.predict(model, _cell(decision.context))


# -- evaluating a policy on logged decisions ------------------------------------------


@functools.cache
def _takes_weights(kind: type[Any]) -> bool:
    try:
        return "weights" in inspect.signature(kind.scores).parameters
    except (TypeError, ValueError):
        return False


def target_pmf(target: Scorer, decision: Decision, *, greedy: bool = False) -> list[float]:
    """The target's pmf over ``decision.actions`` (one-hot on its argmax if ``greedy``).

    A target whose ``scores`` takes ``weights`` scores under the reward weights the
    logged request carried, as it would have served that request.
    """
    if _takes_weights(type(target)):
        probs = target.scores(decision.context, decision.actions,  # type: ignore[call-arg]
                              weights=decision.weights)
    else:
        probs = target.scores(decision.context, decision.actions)
    if greedy:
        best = max(range(len(probs)), key=lambda i: (probs[i], -i))
        return [1.0 if i == best else 0.0 for i in range(len(probs))]
    return list(probs)


@dataclass(frozen=True)
class Report:
    """IPS, SNIPS and DR estimates of a target's mean reward on one window of logs."""

    ips: Estimate
    snips: Estimate
    dr: Estimate
    logged: Estimate
    n: int
    ess: float
    share: Mapping[str, float]
    outcomes: Mapping[str, Estimate] = field(default_factory=dict)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat ``name -> value`` metrics (as logged to MLflow)."""
        out: dict[str, float] = {f"{prefix}n": float(self.n), f"{prefix}ess": self.ess}
        for name in ("ips", "snips", "dr", "logged"):
            est: Estimate = getattr(self, name)
            out[f"{prefix}{name}"] = est.value
            out[f"{prefix}{name}_low"] = est.low
            out[f"{prefix}{name}_high"] = est.high
        for name, est in self.outcomes.items():
            out[f"{prefix}{name}"] = est.value
        for model, share in self.share.items():
            out[f"{prefix}share.{model}"] = share
        return out


def evaluate(
    target: Scorer,
    logs: Sequence[LoggedLike],
    *,
    greedy: bool = False,
    q_hat: QHat | None = None,
    rewards: Sequence[float] | None = None,
    outcomes: Mapping[str, Sequence[float | None]] | None = None,
) -> Report:
    """Score ``target`` on logged decisions with IPS, SNIPS and DR.

    ``q_hat(decision, model)`` is DR's reward model (default: :class:`MeanRewardModel`
    fitted on ``logs``). ``rewards`` overrides the logged rewards (e.g. recomputed under
    other reward weights). ``outcomes`` maps a name (``quality``, ``cost_usd``, ...) to a
    per-sample value; each gets a SNIPS estimate of its mean under the target (samples
    where it is ``None`` are skipped).

    >>> from bandit.catalog import Catalog
    >>> from bandit.features import featurize, parse_request
    >>> from bandit.policy import Policy
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Row:
    ...     decision: Decision
    ...     reward: float
    >>> logger = Policy(Catalog.from_dict({"models": [{"name": "a"}, {"name": "b"}]}))
    >>> ctx = featurize(parse_request(prompt="hi"))
    >>> logs = [Row(d, 1.0 if d.model == "a" else 0.0)
    ...         for d in (logger.decide(ctx) for _ in range(50))]
    >>> report = evaluate(logger, logs)
    >>> abs(report.ips.value - report.logged.value) < 1e-9   # on-policy: IPS = mean
    True
    """
    n = len(logs)
    r = np.array([float(x.reward) for x in logs] if rewards is None else rewards, dtype=float)
    if r.shape != (n,):
        raise PolicyError("ope: rewards must give one value per logged decision")
    mu = np.empty(n)
    p = np.empty(n)
    q_logged = np.empty(n)
    q_target = np.empty(n)
    share: dict[str, float] = {}
    if q_hat is None:
        q_hat = MeanRewardModel.fit(
            (x.decision.model, _cell(x.decision.context), float(ri))
            for x, ri in zip(logs, r, strict=True)
        )
    for i, x in enumerate(logs):
        d = x.decision
        pmf = target_pmf(target, d, greedy=greedy)
        mu[i] = d.probability
        p[i] = pmf[d.index]
        qs = [q_hat(d, a.model) for a in d.actions]
        q_logged[i] = qs[d.index]
        q_target[i] = float(np.dot(pmf, qs))
        for a, pa in zip(d.actions, pmf, strict=True):
            share[a.model] = share.get(a.model, 0.0) + pa
    w = p / mu if n else p
    ess = float(w.sum() ** 2 / (w**2).sum()) if n and (w**2).sum() > 0 else 0.0
    extra: dict[str, Estimate] = {}
    for name, values in (outcomes or {}).items():
        keep = [i for i, v in enumerate(values) if v is not None]
        vals = np.fromiter((float(v) for v in values if v is not None), dtype=np.float64)
        extra[name] = snips(vals, mu[keep], p[keep])
    return Report(
        ips=ips(r, mu, p),
        snips=snips(r, mu, p),
        dr=doubly_robust(r, mu, p, q_logged=q_logged, q_target=q_target),
        logged=Estimate.of_terms(r),
        n=n,
        ess=ess,
        share={m: v / n for m, v in sorted(share.items())},
        outcomes=extra,
    )


def summary(report: Report) -> dict[str, Any]:
    """A JSON-friendly view of a report."""
    return {
        "n": report.n,
        "ess": report.ess,
        **{k: getattr(report, k).to_dict() for k in ("ips", "snips", "dr", "logged")},
        "outcomes": {k: v.to_dict() for k, v in report.outcomes.items()},
        "share": dict(report.share),
    }
