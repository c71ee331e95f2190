"""Running estimates of what a call to each model costs and how long it takes.

They are learned only from the outcomes of calls the router actually made, and seeded
by the catalog (list prices, a latency prior) until then. The policy feeds them, scaled
by the request's reward weights, to Vowpal Wabbit as action features, so a request that
values money or time more sees the trade-off move at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bandit.catalog import ModelSpec

DEFAULT_OUTPUT_TOKENS = 256.0
DEFAULT_LATENCY_MS = 1000.0


@dataclass
class _Stat:
    n: float = 0.0
    total: float = 0.0

    def add(self, value: float) -> None:
        self.n += 1.0
        self.total += value

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

    def add(self, x: float, y: float) -> None:
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

    def observe(
        self,
        model: str,
        *,
        input_tokens: float | None,
        output_tokens: float | None,
        cost_usd: float | None,
        latency_ms: float | None,
    ) -> None:
        """Record the outcome of a call this router made to ``model``."""
        if output_tokens is not None and output_tokens >= 0:
            self.output_tokens.setdefault(model, _Stat()).add(float(output_tokens))
        if cost_usd is not None and cost_usd >= 0:
            self.cost.setdefault(model, _Line()).add(float(input_tokens or 0), cost_usd)
        if latency_ms is not None and latency_ms >= 0:
            self.latency.setdefault(model, _Stat()).add(float(latency_ms))

    def cost_usd(self, spec: ModelSpec, *, input_tokens: int, max_tokens: int | None) -> float:
        """Expected cost of one call: list prices when known, else observed cost."""
        # Called for every eligible model on every decision: plain lookups, no throwaway
        # _Stat objects.
        if spec.input_price > 0 or spec.output_price > 0:
            stat = self.output_tokens.get(spec.name)
            if stat is not None and stat.n:
                out = stat.total / stat.n
            else:
                out = min(DEFAULT_OUTPUT_TOKENS, float(max_tokens or DEFAULT_OUTPUT_TOKENS))
            if max_tokens is not None:
                out = min(out, float(max_tokens))
            return spec.call_cost_usd(input_tokens=input_tokens, output_tokens=out)
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
        return est
