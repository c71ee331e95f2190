"""Running estimates of what a call to each model costs and how long it takes.

They are learned only from the outcomes of calls the router actually made, and seeded
by the catalog (list prices, a latency prior) until then. The policy adds them, scaled
by the request's reward weights, to each model's predicted quality, so a request that
values money or time more sees the trade-off move at once.

Cost depends on the prompt: a model's answers to a coding task are many times longer
than its answers to a multiple-choice question. Besides a pooled figure per model, each
model has exact online ridge fits of its answer length (priced models) and of its call
cost (models without list prices) on :func:`describe` of the prompt: its size and its
dense sketch, which separates kinds of prompts. The fits take over from the pooled
figures once a model has :data:`MIN_FIT_OBSERVATIONS` outcomes.

Evidence ages (``memory``): once a model has ``memory`` outcomes, each new one counts as
much as before and the older ones fade in proportion (exponential forgetting with a
half-life of about ``0.69 * memory`` outcomes), so a model whose answers grow longer or
whose calls grow dearer is followed at a bounded rate however long its history.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bandit.catalog import ModelSpec
from bandit.drift import fade

DEFAULT_OUTPUT_TOKENS = 256.0
DEFAULT_LATENCY_MS = 1000.0
#: Length of the prompt sketch the per-prompt fits read (namespace ``e`` of the features).
SKETCH_DIM = 24
#: A per-prompt fit is trusted from this many observations of its model on.
MIN_FIT_OBSERVATIONS = 30
_COST_SCALE = 1e-3  # fits in thousandths of a dollar
_TOKENS_SCALE = 100.0  # fits in hundreds of output tokens

FloatArray = npt.NDArray[np.float64]


def describe(input_tokens: float, sketch: Sequence[float] | None) -> FloatArray:
    """What the per-prompt fits read: ``[1, input_tokens / 1000, sketch...]``.

    >>> describe(500, (0.6, 0.8)).tolist()[:4]
    [1.0, 0.5, 0.6, 0.8]
    """
    out = np.zeros(2 + SKETCH_DIM)
    out[0] = 1.0
    out[1] = float(input_tokens) / 1000.0
    if sketch:
        n = min(len(sketch), SKETCH_DIM)
        out[2 : 2 + n] = sketch[:n]
    return out


class _Ridge:
    """Online ridge regression ``y ~ theta . x`` (Sherman-Morrison, exact at every step).

    The intercept is barely regularised, the other coefficients with ``ridge``: with few
    observations the fit is close to their mean, with many it follows the prompt.
    """

    def __init__(self, dim: int, ridge: float = 1.0) -> None:
        prior = np.full(dim, 1.0 / ridge)
        prior[0] = 1e4
        self.inv: FloatArray = np.diag(prior)
        self._prior_precision: FloatArray = np.diag(1.0 / prior)
        self.b: FloatArray = np.zeros(dim)
        self.theta: FloatArray = np.zeros(dim)
        self.n = 0.0
        self.y_max = 0.0

    def add(self, x: FloatArray, y: float, memory: float = 0.0) -> None:
        keep = fade(self.n, memory)
        if keep < 1.0:
            # Least squares with forgetting: every old observation is weighted by
            # ``keep``, and the ridge prior keeps its full weight, so that directions the
            # recent prompts do not explore stay as regularised as at the start (plain
            # exponential forgetting would blow their variance up).
            precision = np.linalg.inv(self.inv)
            precision = keep * precision + (1.0 - keep) * self._prior_precision
            precision += np.outer(x, x)
            self.inv = np.asarray(np.linalg.inv(precision), dtype=np.float64)
            self.b = keep * self.b + y * x
            self.theta = self.inv @ self.b
            self.n = self.n * keep + 1.0
            self.y_max = max(self.y_max, y)
            return
        v = self.inv @ x
        self.inv -= np.outer(v, v) / (1.0 + float(x @ v))
        self.b += y * x
        self.theta = self.inv @ self.b
        self.n += 1.0
        self.y_max = max(self.y_max, y)

    def predict(self, x: FloatArray) -> float:
        # Never below zero nor wildly above anything seen (a fit far from its data).
        return min(max(float(self.theta @ x), 0.0), 2.0 * self.y_max)

    def to_list(self) -> list[Any]:
        blob = np.concatenate([self.inv.ravel(), self.b]).astype("<f8").tobytes()
        return [self.n, self.y_max, base64.b64encode(blob).decode()]

    @classmethod
    def from_list(cls, dim: int, raw: Sequence[Any]) -> _Ridge:
        out = cls(dim)
        values = np.frombuffer(base64.b64decode(raw[2]), dtype="<f8")
        if values.size != dim * dim + dim:
            raise ValueError(f"a fit of {dim} features needs {dim * dim + dim} numbers, "
                             f"got {values.size}")
        out.inv = values[: dim * dim].reshape(dim, dim).astype(np.float64)
        out.b = values[dim * dim :].astype(np.float64)
        out.theta = out.inv @ out.b
        out.n, out.y_max = float(raw[0]), float(raw[1])
        return out


@dataclass
class _Stat:
    n: float = 0.0
    total: float = 0.0

    def add(self, value: float, memory: float = 0.0) -> None:
        keep = fade(self.n, memory)
        self.n = self.n * keep + 1.0
        self.total = self.total * keep + value

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None


@dataclass
class _Line:
    """Online least squares of ``y = a + b * x`` (falls back to the mean of ``y``)."""

    n: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0

    def add(self, x: float, y: float, memory: float = 0.0) -> None:
        keep = fade(self.n, memory)
        self.n *= keep
        self.sx *= keep
        self.sy *= keep
        self.sxx *= keep
        self.sxy *= keep
        self.n += 1.0
        self.sx += x
        self.sy += y
        self.sxx += x * x
        self.sxy += x * y

    def predict(self, x: float) -> float | None:
        if not self.n:
            return None
        mean_y = self.sy / self.n
        var_x = self.sxx / self.n - (self.sx / self.n) ** 2
        if self.n < 3 or var_x <= 1e-9:
            return mean_y
        b = (self.sxy / self.n - (self.sx / self.n) * mean_y) / var_x
        a = mean_y - b * self.sx / self.n
        y = a + b * x
        # A line fitted on few points can go negative or wild far from the data.
        return y if 0.0 <= y <= 10 * max(mean_y, 1e-12) else mean_y

    def to_list(self) -> list[float]:
        return [self.n, self.sx, self.sy, self.sxx, self.sxy]


@dataclass
class Estimates:
    """Per-model running estimates of output tokens, call cost and latency.

    Without list prices, a call's cost is fitted per model as ``a + b * input_tokens``
    (output tokens cost money too, so cost is not proportional to the prompt).

    >>> from bandit.catalog import ModelSpec
    >>> est = Estimates()
    >>> spec = ModelSpec(name="m", input_price=1.0, output_price=2.0)
    >>> est.cost_usd(spec, input_tokens=1000, max_tokens=None)
    0.001512
    >>> est.observe("m", input_tokens=1000, output_tokens=100, cost_usd=None, latency_ms=500.0)
    >>> est.cost_usd(spec, input_tokens=1000, max_tokens=None)
    0.0012
    >>> free = ModelSpec(name="f")
    >>> for tokens in (100, 200, 300):
    ...     est.observe("f", input_tokens=tokens, output_tokens=None,
    ...                 cost_usd=0.001 + tokens * 1e-5, latency_ms=None)
    >>> round(est.cost_usd(free, input_tokens=400, max_tokens=None), 6)
    0.005
    """

    output_tokens: dict[str, _Stat] = field(default_factory=dict)
    cost: dict[str, _Line] = field(default_factory=dict)
    latency: dict[str, _Stat] = field(default_factory=dict)
    # Per-prompt fits on :func:`describe` (prompt size and sketch): how long a model's
    # answers and how costly its calls are for *this kind* of prompt. Answers to a
    # coding task are ten times longer than to a multiple-choice question, so a single
    # mean per model misprices every kind of prompt but the most frequent one.
    output_fit: dict[str, _Ridge] = field(default_factory=dict)
    cost_fit: dict[str, _Ridge] = field(default_factory=dict)
    # Outcomes per model at most before the old ones fade (0: never).
    memory: float = 0.0
    # The trusted fits of a list of models stacked into one matrix (see fitted), until
    # the next observation.
    _stacks: dict[tuple[tuple[str, bool], ...], tuple[list[int], FloatArray, FloatArray]] = (
        field(default_factory=dict, repr=False, compare=False))

    def observe(
        self,
        model: str,
        *,
        input_tokens: float | None,
        output_tokens: float | None,
        cost_usd: float | None,
        latency_ms: float | None,
        sketch: Sequence[float] | None = None,
    ) -> None:
        """Record the outcome of a call this router made to ``model``.

        ``sketch`` is the prompt's dense sketch (``context.dense["e"]``), when known.
        """
        x = describe(input_tokens or 0.0, sketch)
        self._stacks.clear()
        memory = self.memory
        if output_tokens is not None and output_tokens >= 0:
            self.output_tokens.setdefault(model, _Stat()).add(float(output_tokens), memory)
            self._fit(self.output_fit, model).add(x, float(output_tokens) / _TOKENS_SCALE,
                                                  memory)
        if cost_usd is not None and cost_usd >= 0:
            self.cost.setdefault(model, _Line()).add(float(input_tokens or 0), cost_usd,
                                                     memory)
            self._fit(self.cost_fit, model).add(x, float(cost_usd) / _COST_SCALE, memory)
        if latency_ms is not None and latency_ms >= 0:
            self.latency.setdefault(model, _Stat()).add(float(latency_ms), memory)

    def forget(self, model: str) -> None:
        """Drop everything measured of ``model``: it is estimated from the catalog again."""
        for table in (self.output_tokens, self.cost, self.latency, self.output_fit,
                      self.cost_fit):
            table.pop(model, None)
        self._stacks.clear()

    @staticmethod
    def _fit(table: dict[str, _Ridge], model: str) -> _Ridge:
        fit = table.get(model)
        if fit is None:
            fit = table[model] = _Ridge(2 + SKETCH_DIM)
        return fit

    def fitted(self, specs: Sequence[ModelSpec], prompt: FloatArray) -> list[float | None]:
        """Every model's trusted per-prompt fit for ``prompt``, in one matrix product.

        The answer-length fit (in tokens) for a priced model, the call-cost fit (USD)
        for one without prices; None where the model's fit has too few observations.
        Each fit's own prediction, up to float rounding (the product sums in another
        order); pass them to :meth:`cost_usd` as ``fit``.
        """
        key = tuple((spec.name, spec.input_price > 0 or spec.output_price > 0)
                    for spec in specs)
        stack = self._stacks.get(key)
        if stack is None:
            rows: list[int] = []
            thetas: list[FloatArray] = []
            ceilings: list[float] = []
            for i, (name, priced) in enumerate(key):
                fit = (self.output_fit if priced else self.cost_fit).get(name)
                if fit is not None and fit.n >= MIN_FIT_OBSERVATIONS:
                    rows.append(i)
                    thetas.append(fit.theta)
                    ceilings.append(2.0 * fit.y_max)
            matrix = np.array(thetas) if thetas else np.zeros((0, len(prompt)))
            if len(self._stacks) >= 64:  # allow-lists can make many subsets
                self._stacks.clear()
            stack = self._stacks[key] = (rows, matrix, np.array(ceilings))
        rows, matrix, caps = stack
        out: list[float | None] = [None] * len(specs)
        if rows:
            values = np.minimum(np.maximum(matrix @ prompt, 0.0), caps).tolist()
            for i, v in zip(rows, values, strict=True):
                out[i] = v * (_TOKENS_SCALE if key[i][1] else _COST_SCALE)
        return out

    def cost_usd(self, spec: ModelSpec, *, input_tokens: int, max_tokens: int | None,
                 prompt: FloatArray | None = None, fit: float | None = None) -> float:
        """Expected cost of one call: list prices when known, else observed cost.

        ``prompt`` is :func:`describe` of the request: with it, and once a model has
        :data:`MIN_FIT_OBSERVATIONS` outcomes, the per-prompt fits are used. ``fit``,
        from :meth:`fitted`, spares the lookup.
        """
        # Called for every eligible model on every decision: plain lookups, no throwaway
        # _Stat objects.
        if fit is None and prompt is not None:
            fit = self.fitted([spec], prompt)[0]
        if spec.input_price > 0 or spec.output_price > 0:
            stat = self.output_tokens.get(spec.name)
            if fit is not None:
                out = fit
            elif stat is not None and stat.n:
                out = stat.total / stat.n
            else:
                out = min(DEFAULT_OUTPUT_TOKENS, float(max_tokens or DEFAULT_OUTPUT_TOKENS))
            if max_tokens is not None:
                out = min(out, float(max_tokens))
            return spec.call_cost_usd(input_tokens=input_tokens, output_tokens=out)
        if fit is not None:
            return fit
        line = self.cost.get(spec.name)
        fitted = line.predict(float(input_tokens)) if line is not None else None
        return 0.0 if fitted is None else fitted

    def latency_ms(self, spec: ModelSpec) -> float:
        """Expected latency: the observed mean, else the catalog prior, else the fleet's."""
        stat = self.latency.get(spec.name)
        if stat is not None and stat.n:
            return stat.total / stat.n
        if spec.latency_ms is not None:
            return spec.latency_ms
        seen = [s.mean for s in self.latency.values() if s.mean is not None]
        return sum(seen) / len(seen) if seen else DEFAULT_LATENCY_MS

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_tokens": {m: [s.n, s.total] for m, s in self.output_tokens.items()},
            "latency": {m: [s.n, s.total] for m, s in self.latency.items()},
            "cost": {m: line.to_list() for m, line in self.cost.items()},
            "output_fit": {m: f.to_list() for m, f in self.output_fit.items()},
            "cost_fit": {m: f.to_list() for m, f in self.cost_fit.items()},
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Estimates:
        est = cls()
        for name in ("output_tokens", "latency"):
            table = getattr(est, name)
            for model, (n, total) in raw.get(name, {}).items():
                table[model] = _Stat(float(n), float(total))
        for model, values in raw.get("cost", {}).items():
            est.cost[model] = _Line(*(float(v) for v in values))
        # Estimates saved before the per-prompt fits existed load without them.
        for name in ("output_fit", "cost_fit"):
            table = getattr(est, name)
            for model, values in raw.get(name, {}).items():
                table[model] = _Ridge.from_list(2 + SKETCH_DIM, values)
        return est
