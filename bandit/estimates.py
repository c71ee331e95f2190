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
class Estimates:
    """Per-model running means of output tokens, cost per input token and latency.

    >>> from bandit.catalog import ModelSpec
    >>> est = Estimates()
    >>> spec = ModelSpec(name="m", input_price=1.0, output_price=2.0)
    >>> est.cost_usd(spec, input_tokens=1000, max_tokens=None)
    0.001512
    >>> est.observe("m", input_tokens=1000, output_tokens=100, cost_usd=None, latency_ms=500.0)
    >>> est.cost_usd(spec, input_tokens=1000, max_tokens=None)
    0.0012
    """

    output_tokens: dict[str, _Stat] = field(default_factory=dict)
    cost_per_token: dict[str, _Stat] = field(default_factory=dict)
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
        if cost_usd is not None and cost_usd >= 0 and input_tokens:
            self.cost_per_token.setdefault(model, _Stat()).add(cost_usd / input_tokens)
        if latency_ms is not None and latency_ms >= 0:
            self.latency.setdefault(model, _Stat()).add(float(latency_ms))

    def cost_usd(self, spec: ModelSpec, *, input_tokens: int, max_tokens: int | None) -> float:
        """Expected cost of one call: list prices when known, else observed cost."""
        if spec.input_price > 0 or spec.output_price > 0:
            out = self.output_tokens.get(spec.name, _Stat()).mean
            if out is None:
                out = min(DEFAULT_OUTPUT_TOKENS, float(max_tokens or DEFAULT_OUTPUT_TOKENS))
            if max_tokens is not None:
                out = min(out, float(max_tokens))
            return spec.call_cost_usd(input_tokens=input_tokens, output_tokens=out)
        per_token = self.cost_per_token.get(spec.name, _Stat()).mean
        return 0.0 if per_token is None else per_token * input_tokens

    def latency_ms(self, spec: ModelSpec) -> float:
        """Expected latency: the observed mean, else the catalog prior, else the fleet's."""
        observed = self.latency.get(spec.name, _Stat()).mean
        if observed is not None:
            return observed
        if spec.latency_ms is not None:
            return spec.latency_ms
        seen = [s.mean for s in self.latency.values() if s.mean is not None]
        return sum(seen) / len(seen) if seen else DEFAULT_LATENCY_MS

    def to_dict(self) -> dict[str, Any]:
        return {
            name: {m: [s.n, s.total] for m, s in getattr(self, name).items()}
            for name in ("output_tokens", "cost_per_token", "latency")
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Estimates:
        est = cls()
        for name in ("output_tokens", "cost_per_token", "latency"):
            table = getattr(est, name)
            for model, (n, total) in raw.get(name, {}).items():
                table[model] = _Stat(float(n), float(total))
        return est
