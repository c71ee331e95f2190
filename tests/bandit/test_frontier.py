from __future__ import annotations

import pytest

from bandit.frontier import (
    aiq,
    cost_to_reach,
    frontier_metrics,
    nondecreasing_hull,
    quality_at,
)

# Five routers' points: (1, .5) and (4, .95) are hull vertices; (2, .6) lies under the
# chord from (1, .5) to (3, .9); (3, .9) is a vertex; (5, .93) is dearer and worse than
# (4, .95) so the non-decreasing hull ends at (4, .95).
POINTS = [(2.0, 0.6), (1.0, 0.5), (3.0, 0.9), (4.0, 0.95), (5.0, 0.93)]
HULL = ((1.0, 0.5), (3.0, 0.9), (4.0, 0.95))


def test_hull_keeps_upper_convex_non_decreasing_vertices() -> None:
    assert nondecreasing_hull(POINTS) == HULL


@pytest.mark.parametrize(
    ("points", "hull"),
    [
        ([(1, 0.5)], ((1.0, 0.5),)),
        ([(1, 0.5), (1, 0.8)], ((1.0, 0.8),)),
        ([(1, 0.8), (2, 0.7)], ((1.0, 0.8),)),
        ([(0, 0.0), (1, 0.5), (2, 1.0)], ((0.0, 0.0), (2.0, 1.0))),  # collinear middle
        ([(0, 0.0), (1, 0.9), (2, 0.9)], ((0.0, 0.0), (1.0, 0.9))),  # tie -> cheaper
    ],
    ids=["single", "same-cost", "dearer-worse", "collinear", "flat-top"],
)
def test_hull_edge_cases(
    points: list[tuple[float, float]], hull: tuple[tuple[float, float], ...]
) -> None:
    assert nondecreasing_hull(points) == hull


def test_hull_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        nondecreasing_hull([])


def test_quality_at_interpolates_and_is_flat_after_the_top() -> None:
    assert quality_at(HULL, 0.5) is None
    assert quality_at(HULL, 1.0) == 0.5
    assert quality_at(HULL, 2.0) == pytest.approx(0.7)
    assert quality_at(HULL, 3.5) == pytest.approx(0.925)
    assert quality_at(HULL, 100.0) == 0.95


def test_cost_to_reach_is_the_inverse_of_quality_at() -> None:
    assert cost_to_reach(HULL, 0.3) == 1.0
    assert cost_to_reach(HULL, 0.7) == pytest.approx(2.0)
    assert cost_to_reach(HULL, 0.95) == pytest.approx(4.0)
    assert cost_to_reach(HULL, 0.96) is None


def test_aiq_by_hand() -> None:
    # Over [0, 5]: 0 on [0, 1), then trapezoids (1..3) 1.4, (3..4) 0.925, flat (4..5) 0.95.
    assert aiq(HULL, 5.0) == pytest.approx((1.4 + 0.925 + 0.95) / 5.0)
    # Cut inside an edge: over [0, 2] only the trapezoid 1..2: (0.5 + 0.7) / 2.
    assert aiq(HULL, 2.0) == pytest.approx(0.6 / 2.0)
    assert aiq(HULL, 0.5) == 0.0
    with pytest.raises(ValueError):
        aiq(HULL, 0.0)


def test_frontier_metrics_by_hand() -> None:
    # Reference: quality 0.9 at cost 3 (the vertex (3, .9)).
    m = frontier_metrics(POINTS, reference_cost=3.0, reference_quality=0.9, c_max=5.0)
    assert m.hull == HULL
    # 95% of 0.9 = 0.855 on edge (1,.5)-(3,.9): c = 1 + 2 * 0.355 / 0.4 = 2.775.
    assert m.cost_pct_for_95 == pytest.approx(100 * 2.775 / 3.0)
    # 98% of 0.9 = 0.882: c = 1 + 2 * 0.382 / 0.4 = 2.91.
    assert m.cost_pct_for_98 == pytest.approx(100 * 2.91 / 3.0)
    # 10% of cost 3 = 0.3 < cheapest point 1: unreachable.
    assert m.quality_pct_at_10 is None
    # 30% of cost 3 = 0.9: still below 1.
    assert m.quality_pct_at_30 is None
    assert m.aiq == pytest.approx((1.4 + 0.925 + 0.95) / 5.0)
    again = frontier_metrics(POINTS, reference_cost=10.0, reference_quality=0.9, c_max=5.0)
    # 10% of 10 = 1 -> 0.5 / 0.9; 30% of 10 = 3 -> 0.9 / 0.9.
    assert again.quality_pct_at_10 == pytest.approx(100 * 0.5 / 0.9)
    assert again.quality_pct_at_30 == pytest.approx(100.0)


def test_a_single_reference_model_is_its_own_95_and_98_percent() -> None:
    m = frontier_metrics([(2.0, 0.8)], reference_cost=2.0, reference_quality=0.8, c_max=2.0)
    assert m.cost_pct_for_95 == m.cost_pct_for_98 == 100.0
    assert m.quality_pct_at_10 is None
    assert m.aiq == 0.0


def test_metrics_round_trip_through_dict() -> None:
    m = frontier_metrics(POINTS, reference_cost=3.0, reference_quality=0.9, c_max=5.0)
    assert type(m).from_dict(m.to_dict()) == m
