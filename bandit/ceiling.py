"""How far routing can go on an outcome table: diagnostics that PEEK at the test split.

Before tuning a bandit on an outcome table it pays to know what any router could reach
on it, and from what. Three diagnostics answer that; the first two look at test grades,
so they are bounds and measurements, never routers:

* :func:`bandit.replay.task_ceiling_points`: **routing by task**. For every cost
  weight at which some task's best model changes (:func:`task_breakpoints`), each task
  goes to the model with the best *test* ``mean q - w * mean cost / $0.001`` on it.
  Its hull is the best frontier a router that tells the tasks apart, but not the
  prompts within a task, can reach on this test split. A target above it needs
  routing *within* a task.
* :func:`within_task_auc`: **is there signal within a task**. Given any predictor's
  quality estimates for every (test prompt, model), the AUC, task by task and model by
  model, of telling the prompts a model gets right from those it gets wrong. 0.5 is no
  signal; routing within a task gains only where it is clearly above.
* :func:`separation`: **how many grades a near-tie needs**. At a cost weight, each
  task's best and second-best model by mean reward, and how many grades of each a
  learner needs before their gap is two standard errors: a bandit, which sees one grade
  per prompt, cannot settle a tie that needs more grades than the task has prompts.

The replay reports the first as its ``task_ceiling`` baseline and the second for its
full-information baseline. ``benchmarks/ceiling_routerbench.py`` prints all three for
the RouterBench subset, with a semantic embedding as a second predictor where the
``wordllama`` package is installed; docs/replay.md reads them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bandit.outcomes import OutcomeTable
from bandit.reward import COST_UNIT_USD

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _split_by_task(table: OutcomeTable, split: str) -> Iterator[tuple[str, IntArray, IntArray]]:
    """For each task on ``split``, sorted: the task, the positions of its prompts among
    the split's rows, and their row numbers in the table."""
    rows = table.indices(split)
    tasks = np.array(table.tasks)[rows]
    for task in sorted(set(tasks.tolist())):
        positions = np.flatnonzero(tasks == task)
        yield task, positions, rows[positions]


def task_breakpoints(table: OutcomeTable, split: str = "test") -> tuple[float, ...]:
    """The cost weights at which some task's best model (by its mean on ``split``) may
    change: every positive ``(q_i - q_j) / ((c_i - c_j) / $0.001)`` of two models on a
    task, sorted.

    >>> t = OutcomeTable.from_rows(
    ...     ["p1", "p2"], ["qa", "qa"], ["test", "test"], ["x", "y"], ["cheap", "dear"],
    ...     quality=[[0.5, 1.0], [0.5, 1.0]], cost_usd=[[0.001, 0.003], [0.001, 0.003]],
    ...     output_chars=[[1, 1], [1, 1]])
    >>> task_breakpoints(t)
    (0.25,)
    """
    found: set[float] = set()
    for _, _, mine in _split_by_task(table, split):
        q = table.quality[mine].mean(axis=0)
        c = table.cost_usd[mine].mean(axis=0) / COST_UNIT_USD
        dq = q[:, None] - q[None, :]
        dc = c[:, None] - c[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(dc > 0, dq / dc, np.nan)
        found.update(float(x) for x in w[np.isfinite(w) & (w > 0)])
    return tuple(sorted(found))


def ceiling_weights(breakpoints: Sequence[float]) -> tuple[float, ...]:
    """One cost weight inside every interval between ``breakpoints`` (the geometric
    midpoint), plus 0 and twice the largest: the argmax of every task is constant
    inside an interval, so these reach every allocation the Lagrangian sweep can.

    >>> ceiling_weights([0.25, 1.0])
    (0.0, 0.5, 2.0)
    >>> ceiling_weights([])
    (0.0,)
    """
    b = sorted(x for x in breakpoints if x > 0)
    inner = [float(np.sqrt(lo * hi)) for lo, hi in itertools.pairwise(b)]
    return (0.0, *inner, *([2.0 * b[-1]] if b else []))


def auc(scores: npt.ArrayLike, quality: npt.ArrayLike) -> float | None:
    """The area under the ROC curve of ``scores`` for grades ``quality`` in [0, 1].

    A grade ``q`` counts as a good answer of weight ``q`` and a bad one of weight
    ``1 - q`` (so 0/1 grades give the usual AUC): the probability that a good answer
    scores above a bad one, ties counting half. ``None`` when there are no good or no
    bad answers.

    >>> auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    >>> auc([1, 2, 3], [1, 1, 1]) is None
    True
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    q = np.asarray(quality, dtype=np.float64).ravel()
    if s.shape != q.shape:
        raise ValueError(f"scores and quality differ in length: {s.size} and {q.size}")
    pos, neg = q, 1.0 - q
    total = float(pos.sum() * neg.sum())
    if total <= 0.0:
        return None
    values, group = np.unique(s, return_inverse=True)
    pos_at = np.bincount(group, weights=pos, minlength=len(values))
    neg_at = np.bincount(group, weights=neg, minlength=len(values))
    neg_below = np.cumsum(neg_at) - neg_at
    return float((pos_at * (neg_below + 0.5 * neg_at)).sum() / total)


def within_task_auc(
    table: OutcomeTable, predicted_quality: FloatArray
) -> dict[str, dict[str, float | None]]:
    """Per task and model, the AUC (:func:`auc`) of ``predicted_quality`` (shape
    ``(n_test, k)``, rows in ``table.indices("test")`` order) on that task's test
    prompts: how well the predictor tells which of them the model answers well.
    """
    rows = table.indices("test")
    if predicted_quality.shape != (len(rows), table.n_models):
        raise ValueError(f"predicted_quality: expected shape {(len(rows), table.n_models)}, "
                         f"got {predicted_quality.shape}")
    return {task: {m: auc(predicted_quality[positions, j], table.quality[mine, j])
                   for j, m in enumerate(table.models)}
            for task, positions, mine in _split_by_task(table, "test")}


@dataclass(frozen=True)
class Separation:
    """A task's best and second-best model at one cost weight, by mean reward on a split.

    ``grades_needed`` is how many grades *of each* the two need before the gap between
    their mean rewards is ``z`` standard errors of its estimate; ``prompts`` is how many
    prompts of the task the split has.
    """

    task: str
    best: str
    runner_up: str
    gap: float
    grades_needed: float
    prompts: int


def separation(
    table: OutcomeTable, cost_weight: float, *, split: str = "train", z: float = 2.0
) -> tuple[Separation, ...]:
    """For every task (of a table with two models or more): the two best models by mean
    ``q - w * cost / $0.001`` on ``split``, the gap between them, and
    ``z**2 * (var_1 + var_2) / gap**2`` grades of each (``var`` the variance of one
    model's reward over the task's prompts) needed to tell them apart at ``z`` standard
    errors.

    >>> t = OutcomeTable.from_rows(
    ...     [f"p{i}" for i in range(4)], ["qa"] * 4, ["train"] * 4, ["x"] * 4, ["a", "b"],
    ...     quality=[[1, 1], [1, 0], [0, 1], [1, 0]], cost_usd=[[0.0, 0.0]] * 4,
    ...     output_chars=[[1, 1]] * 4)
    >>> s = separation(t, 0.0)[0]
    >>> (s.best, s.runner_up, s.gap, s.grades_needed, s.prompts)
    ('a', 'b', 0.25, 28.0, 4)
    """
    if table.n_models < 2:
        return ()
    out = []
    for task, _, mine in _split_by_task(table, split):
        r = table.quality[mine] - cost_weight * table.cost_usd[mine] / COST_UNIT_USD
        mean = r.mean(axis=0)
        first, second = (int(j) for j in np.argsort(-mean, kind="stable")[:2])
        gap = float(mean[first] - mean[second])
        var = float(r[:, first].var() + r[:, second].var())
        needed = np.inf if gap <= 0 else z * z * var / (gap * gap)
        out.append(Separation(task=task, best=table.models[first],
                              runner_up=table.models[second], gap=gap,
                              grades_needed=float(needed), prompts=len(mine)))
    return tuple(out)
