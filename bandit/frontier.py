"""Cost-quality frontiers: the hull of a router's operating points and its headline numbers.

A router evaluated at several settings (cost weights) gives points ``(cost, quality)``,
cost being the mean USD per prompt and quality the mean graded quality. Choosing at
random between two settings, prompt by prompt, reaches every point of the segment
between them in expectation, and spending less never lowers the best quality already
reachable, so what a router can achieve for a budget ``c`` is

.. math::

    \\tilde R(c) = \\max \\{ q : (c', q) \\in \\operatorname{conv}(\\text{points}),\\ c' \\le c \\}

the *non-decreasing convex hull* of RouterBench (arXiv 2403.12031): the upper concave
hull of the points, followed up to its highest point (the cheapest one if several tie)
and flat after it. Below the router's cheapest point nothing is reachable.

Every metric here is read from :math:`\\tilde R` and is the same for every router and
baseline:

* ``cost_to_reach(q)``: the least cost whose :math:`\\tilde R` reaches ``q`` (linear
  interpolation on a hull edge), or ``None`` when the router never reaches ``q``;
* ``quality_at(c)``: :math:`\\tilde R(c)`, or ``None`` below the cheapest point;
* ``aiq``: RouterBench's Average Improvement in Quality,
  :math:`\\frac{1}{c_{max}} \\int_0^{c_{max}} \\tilde R(c)\\, dc` with :math:`\\tilde R = 0`
  below the router's cheapest point. The range ``[0, c_max]`` is shared by every router
  of a run (replay uses the mean cost of the most expensive single model), as in
  RouterBench's reference code, which integrates from each router's cheapest point and
  divides by the largest cost of all routers compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

_EPS = 1e-12


def nondecreasing_hull(points: Iterable[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Vertices of the non-decreasing upper convex hull of ``(cost, quality)`` points.

    Vertices are sorted by cost; the last one is the highest quality (cheapest on ties).

    >>> nondecreasing_hull([(0, 0.2), (1, 0.3), (2, 0.9), (3, 0.8), (4, 0.95)])
    ((0.0, 0.2), (2.0, 0.9), (4.0, 0.95))
    >>> nondecreasing_hull([(1, 0.5), (1, 0.7), (3, 0.6)])
    ((1.0, 0.7),)
    """
    pts = sorted({(float(c), float(q)) for c, q in points}, key=lambda p: (p[0], -p[1]))
    if not pts:
        raise ValueError("nondecreasing_hull: no points")
    hull: list[tuple[float, float]] = []
    for c, q in pts:
        if hull and c == hull[-1][0]:
            continue  # same cost, lower quality (sorted by quality descending)
        # Pop the last vertex while it lies on or under the chord to the new point.
        while len(hull) >= 2:
            (c1, q1), (c2, q2) = hull[-2], hull[-1]
            if (q2 - q1) * (c - c1) <= (q - q1) * (c2 - c1) + _EPS:
                hull.pop()
            else:
                break
        hull.append((c, q))
    top = max(range(len(hull)), key=lambda i: (hull[i][1], -hull[i][0]))
    return tuple(hull[: top + 1])


def quality_at(hull: tuple[tuple[float, float], ...], cost: float) -> float | None:
    """:math:`\\tilde R(cost)`: best quality reachable for ``cost`` (``None`` if none).

    >>> h = ((1.0, 0.5), (3.0, 0.9))
    >>> quality_at(h, 2.0), quality_at(h, 10.0), quality_at(h, 0.5)
    (0.7, 0.9, None)
    """
    if cost < hull[0][0] - _EPS:
        return None
    for (c1, q1), (c2, q2) in pairwise(hull):
        if cost <= c2:
            return q1 + (q2 - q1) * (max(cost, c1) - c1) / (c2 - c1)
    return hull[-1][1]


def cost_to_reach(hull: tuple[tuple[float, float], ...], quality: float) -> float | None:
    """Least cost at which :math:`\\tilde R` reaches ``quality`` (``None`` if never).

    >>> h = ((1.0, 0.5), (3.0, 0.9))
    >>> round(cost_to_reach(h, 0.7), 9), cost_to_reach(h, 0.2), cost_to_reach(h, 0.95)
    (2.0, 1.0, None)
    """
    if quality <= hull[0][1] + _EPS:
        return hull[0][0]
    for (c1, q1), (c2, q2) in pairwise(hull):
        if quality <= q2 + _EPS:
            return c1 + (c2 - c1) * (min(quality, q2) - q1) / (q2 - q1)
    return None


def aiq(hull: tuple[tuple[float, float], ...], c_max: float) -> float:
    """RouterBench's AIQ: mean of :math:`\\tilde R` over ``[0, c_max]`` (0 below the hull).

    >>> aiq(((1.0, 0.5), (3.0, 0.9)), 4.0)  # (0 + 1.4 + 0.9) / 4
    0.575
    """
    if c_max <= 0:
        raise ValueError(f"aiq: c_max must be positive, got {c_max!r}")
    if hull[0][0] >= c_max:
        return 0.0
    xs = [c for c, _ in hull if c < c_max] + [c_max]
    ys = [q for c, q in hull if c < c_max]
    end = quality_at(hull, c_max)
    ys.append(hull[-1][1] if end is None else end)
    edges = pairwise(zip(xs, ys, strict=True))
    area = sum((x2 - x1) * (y1 + y2) / 2 for (x1, y1), (x2, y2) in edges)
    return round(area / c_max, 12)


@dataclass(frozen=True)
class FrontierMetrics:
    """Headline numbers of one router against a reference (the best single model).

    Percentages are of the reference's cost or quality; ``None`` means "not reachable".
    """

    cost_pct_for_95: float | None
    cost_pct_for_98: float | None
    quality_pct_at_10: float | None
    quality_pct_at_30: float | None
    aiq: float
    hull: tuple[tuple[float, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cost_pct_for_95": self.cost_pct_for_95,
            "cost_pct_for_98": self.cost_pct_for_98,
            "quality_pct_at_10": self.quality_pct_at_10,
            "quality_pct_at_30": self.quality_pct_at_30,
            "aiq": self.aiq,
            "hull": [{"cost_per_prompt": c, "quality": q} for c, q in self.hull],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FrontierMetrics:
        return cls(
            cost_pct_for_95=raw["cost_pct_for_95"],
            cost_pct_for_98=raw["cost_pct_for_98"],
            quality_pct_at_10=raw["quality_pct_at_10"],
            quality_pct_at_30=raw["quality_pct_at_30"],
            aiq=float(raw["aiq"]),
            hull=tuple((float(h["cost_per_prompt"]), float(h["quality"])) for h in raw["hull"]),
        )


def _pct(value: float | None, of: float) -> float | None:
    return None if value is None or of <= 0 else 100.0 * value / of


def frontier_metrics(
    points: Iterable[tuple[float, float]],
    *,
    reference_cost: float,
    reference_quality: float,
    c_max: float,
) -> FrontierMetrics:
    """The headline numbers of a router's ``(cost, quality)`` points.

    ``cost_pct_for_95``: cost needed to reach 95 % of the reference quality, as a
    percentage of the reference cost (likewise 98); ``quality_pct_at_10``: quality
    reachable for 10 % of the reference cost, as a percentage of the reference quality
    (likewise 30); ``aiq`` over ``[0, c_max]``.

    >>> m = frontier_metrics([(0.1, 0.6), (1.0, 0.9)], reference_cost=1.0,
    ...                      reference_quality=0.9, c_max=1.0)
    >>> round(m.cost_pct_for_95, 2), m.quality_pct_at_10, round(m.aiq, 4)
    (86.5, 66.66666666666667, 0.675)
    """
    hull = nondecreasing_hull(points)
    return FrontierMetrics(
        cost_pct_for_95=_pct(cost_to_reach(hull, 0.95 * reference_quality), reference_cost),
        cost_pct_for_98=_pct(cost_to_reach(hull, 0.98 * reference_quality), reference_cost),
        quality_pct_at_10=_pct(quality_at(hull, 0.10 * reference_cost), reference_quality),
        quality_pct_at_30=_pct(quality_at(hull, 0.30 * reference_cost), reference_quality),
        aiq=aiq(hull, c_max),
        hull=hull,
    )
