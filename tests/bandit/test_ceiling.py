from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.ceiling import (
    auc,
    ceiling_weights,
    separation,
    task_breakpoints,
    within_task_auc,
)
from bandit.errors import RequestError
from bandit.frontier import nondecreasing_hull, quality_at
from bandit.outcomes import OutcomeTable
from bandit.replay import oracle_points, per_task_points, task_ceiling_points


def pairwise_auc(scores: list[float], quality: list[float]) -> float | None:
    """The definition, pair by pair: good answers of weight q, bad ones of weight 1 - q."""
    num = den = 0.0
    for (si, qi), (sj, qj) in itertools.product(zip(scores, quality, strict=True), repeat=2):
        w = qi * (1.0 - qj)
        den += w
        num += w * (1.0 if si > sj else 0.5 if si == sj else 0.0)
    return None if den == 0 else num / den


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.sampled_from([0.0, 0.25, 0.5, 1.0])),
                min_size=1, max_size=25))
def test_auc_is_the_pairwise_definition_with_ties_and_soft_grades(
        pairs: list[tuple[int, float]]) -> None:
    scores = [float(s) for s, _ in pairs]
    quality = [q for _, q in pairs]
    want = pairwise_auc(scores, quality)
    got = auc(scores, quality)
    if want is None:
        assert got is None
    else:
        assert got == pytest.approx(want, abs=1e-12)


def test_auc_bounds_and_errors() -> None:
    assert auc([0.1, 0.2, 0.9, 0.8], [0, 0, 1, 1]) == 1.0
    assert auc([0.9, 0.8, 0.1, 0.2], [0, 0, 1, 1]) == 0.0
    assert auc([0.5] * 4, [0, 1, 0, 1]) == 0.5
    assert auc([1.0, 2.0], [0.0, 0.0]) is None
    with pytest.raises(ValueError, match="differ in length"):
        auc([1.0, 2.0], [1.0])


def random_table(seed: int, n: int = 60, k: int = 3, tasks: int = 2) -> OutcomeTable:
    rng = np.random.default_rng(seed)
    quality = (rng.random((n, k)) < rng.random(k)).astype(float)
    cost = rng.uniform(0.0001, 0.01, size=k) * rng.uniform(0.8, 1.2, size=(n, k))
    return OutcomeTable.from_rows(
        [f"p{i}" for i in range(n)], [f"t{i % tasks}" for i in range(n)],
        ["test" if i % 3 == 0 else "train" for i in range(n)],
        [f"prompt {i}" for i in range(n)], [f"m{j}" for j in range(k)],
        quality=quality, cost_usd=cost, output_chars=np.ones((n, k)))


@pytest.mark.parametrize("seed", range(12))
def test_no_per_task_allocation_is_above_the_task_ceiling(seed: int) -> None:
    """Every way of giving each task one model lands on or under the ceiling's hull on
    test; a router that varies within a task (the oracle) may go above it."""
    table = random_table(seed)
    hull = nondecreasing_hull(p.xy for p in task_ceiling_points(table))
    rows = table.indices("test")
    tasks = np.array(table.tasks)[rows]
    names = sorted(set(tasks.tolist()))
    for pick in itertools.product(range(table.n_models), repeat=len(names)):
        chosen = np.array([pick[names.index(t)] for t in tasks])
        c = float(table.cost_usd[rows, chosen].mean())
        q = float(table.quality[rows, chosen].mean())
        reachable = quality_at(hull, c)
        assert reachable is not None and q <= reachable + 1e-12
    oracle = [p.xy for p in oracle_points(table, [0.0])]
    assert any(q >= (quality_at(hull, c) or 0.0) for c, q in oracle)


def test_the_ceiling_reaches_every_allocation_of_the_lagrangian_sweep() -> None:
    """Between breakpoints nothing changes: a dense sweep finds no point the ceiling's
    weights miss."""
    table = random_table(3, n=90, k=4, tasks=3)
    ceiling = {p.xy for p in task_ceiling_points(table)}
    dense = per_task_points(table, [0.0, *np.geomspace(1e-4, 1e3, 3000)], fit_on="test")
    assert {p.xy for p in dense} <= ceiling


def test_breakpoints_and_weights_of_a_two_model_task() -> None:
    table = OutcomeTable.from_rows(
        ["a", "b", "c"], ["qa", "qa", "qa"], ["test", "test", "train"], ["x", "y", "z"],
        ["cheap", "dear"], quality=[[0, 1], [1, 1], [0, 0]],
        cost_usd=[[0.001, 0.005], [0.001, 0.005], [0.001, 0.005]],
        output_chars=[[1, 1]] * 3)
    # test means: cheap 0.5 at 1 m$, dear 1.0 at 5 m$ -> they tie at w = 0.5 / 4
    assert task_breakpoints(table) == (0.125,)
    assert ceiling_weights(task_breakpoints(table)) == (0.0, 0.25)
    points = task_ceiling_points(table)
    assert [p.choices[0][0] for p in points] == ["dear", "cheap"]
    # the train split alone (one prompt, both wrong) gives no positive breakpoint
    assert task_breakpoints(table, "train") == ()


def test_per_task_points_checks_its_split() -> None:
    with pytest.raises(RequestError, match="fit_on"):
        per_task_points(random_table(0), [0.0], fit_on="validation")


def test_within_task_auc_of_a_perfect_and_a_useless_predictor() -> None:
    table = random_table(1, n=90)
    rows = table.indices("test")
    perfect = within_task_auc(table, table.quality[rows])
    tasks = np.array(table.tasks)[rows]
    for task, per_model in perfect.items():
        for j, m in enumerate(table.models):
            grades = table.quality[rows[tasks == task], j]
            both = 0 < grades.mean() < 1
            assert per_model[m] == (1.0 if both else None)
    flat = within_task_auc(table, np.zeros((len(rows), table.n_models)))
    assert all(v in (0.5, None) for per_model in flat.values() for v in per_model.values())
    with pytest.raises(ValueError, match="expected shape"):
        within_task_auc(table, np.zeros((len(rows) + 1, table.n_models)))


def test_separation_needs_more_grades_for_a_closer_tie() -> None:
    rng = np.random.default_rng(5)
    n = 400
    quality = np.column_stack([rng.random(n) < 0.8, rng.random(n) < 0.7,
                               rng.random(n) < 0.78]).astype(float)
    table = OutcomeTable.from_rows(
        [f"p{i}" for i in range(n)], ["qa"] * n, ["train"] * n, ["x"] * n,
        ["good", "worse", "close"], quality=quality,
        cost_usd=np.tile([0.002, 0.001, 0.001], (n, 1)), output_chars=np.ones((n, 3)))
    means = quality.mean(axis=0)
    free = separation(table, 0.0)[0]
    order = np.argsort(-means, kind="stable")
    assert (free.best, free.runner_up) == (table.models[order[0]], table.models[order[1]])
    assert free.gap == pytest.approx(means[order[0]] - means[order[1]])
    var = quality[:, order[0]].var() + quality[:, order[1]].var()
    assert free.grades_needed == pytest.approx(4 * var / free.gap ** 2)
    assert free.prompts == n
    # charging for cost moves the best model: "good" costs 1 m$ more per prompt
    dear = separation(table, 1.0)[0]
    assert dear.best != "good"
    tie = OutcomeTable.from_rows(["a", "b"], ["qa", "qa"], ["train"] * 2, ["x", "y"],
                                 ["m1", "m2"], quality=[[1, 1], [0, 0]],
                                 cost_usd=[[0.001, 0.001]] * 2, output_chars=[[1, 1]] * 2)
    assert separation(tie, 0.01)[0].grades_needed == float("inf")
    single = OutcomeTable.from_rows(["a"], ["qa"], ["train"], ["x"], ["m1"], quality=[[1]],
                                    cost_usd=[[0.001]], output_chars=[[1]])
    assert separation(single, 0.0) == ()
