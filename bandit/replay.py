"""Replay: how well the bandit routes, measured on an outcome table, never peeking.

The protocol (see ``docs/replay.md``), for each cost weight ``w`` of a log grid, with a
fresh policy seeded alike:

1. **Learn online on train.** Train prompts are streamed once in a seeded random order.
   For each, ``policy.decide(ctx, explore=True)`` picks a model; only that model's
   quality and cost are revealed, the reward is
   ``reward(RewardWeights(quality=1, cost=w, latency=0), quality=q, cost_usd=c)`` and
   the policy learns it with ``outcome={"quality": q, "cost_usd": c, "output_tokens": chars / 4}``.
   The catalog has the table's model names and no prices: costs are learned only from
   what was observed.
2. **Optional extra passes** (``passes > 1``) re-learn the policy's own logged
   ``(decision, reward)`` tuples, shuffled, with their logged probabilities. Their
   action features are rebuilt from the current cost estimates (still only what was
   observed). Unchosen models stay unseen.
3. **Evaluate greedily on test** (``explore=False``), without learning: the mean quality
   and mean cost per prompt of the chosen models give one point of the frontier.

**Clusters of meaning.** Given one embedding per prompt (``replay(embeddings=...)``;
the command computes them with the service's embedder), prompts are placed in a
:class:`~bandit.clusters.ClusterTree` exactly as the service places them: train prompts
in the train order, each assigned *before* the tree learns it, then test prompts
assigned by the tree as train left it (it stops growing when the policy stops
learning). The tree grows the same whatever the bandit chooses, so one tree serves every
cost weight. :class:`ClusterReport` says what it found.

**Changes** (:class:`Change`, ``ReplayConfig.changes``) show how a configuration reacts
when the world moves under it: from a train step on, a model's answers are all wrong
(``degrade``), a model joins the catalog (``add``: it is not offered before), or a
model's list prices change (``price``: its cost per prompt is then the catalog's
``call_cost_usd`` of the prompt's tokens and the answer's ``output_chars / 4``). The
bandit's online stream meets each change at its step; the test split, and every
baseline, see the world after all of them (:func:`world_after`). :class:`ChangeReport`
follows the changed model's share of the bandit's train decisions after the change.

**A simulated judge** (:class:`SimulatedJudge`, ``ReplayConfig.judge``) stands in for
the table's grades on train: the bandit learns the judge's grade of the chosen model's
answer (the true grade, plus the judge's bias for that model and Gaussian noise, clipped
to [0, 1]), weighted and calibrated per model against the decisions that keep their
true grade as people's scores, exactly as the service learns it
(:mod:`bandit.calibration`). The sweep is then run twice on the same contexts, clean
and judged (:class:`JudgeReport`); test and every baseline stay clean.

Baselines share the prompts, the features and the metric code
(:mod:`bandit.frontier`): every single model, uniform random routing, a **per-task
table** (full information plus the task label: the best model per task on train), the
**oracle** (peeks at test grades: per prompt the best quality, cheapest on ties, and
its cost-weighted variants) and the **full-information baseline**, a Vowpal Wabbit
logistic regression on the same features that sees every model's grade on every train
prompt, then picks ``argmax predicted quality - w * expected cost`` on test for each
``w``.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import vowpal_wabbit_next as vw

from bandit.calibration import (
    DEFAULT_JUDGE_WEIGHT,
    DEFAULT_MIN_PAIRS,
    Calibration,
    learned_quality,
)
from bandit.catalog import Catalog, ModelSpec
from bandit.ceiling import ceiling_weights, task_breakpoints, within_task_auc
from bandit.clusters import DEFAULT_CAP, DEFAULT_SPLIT_AFTER, ClusterTree, with_clusters
from bandit.decision import Decision
from bandit.errors import PolicyError, RequestError
from bandit.estimates import Estimates, describe
from bandit.features import Context, featurize, parse_request
from bandit.frontier import FrontierMetrics, frontier_metrics
from bandit.outcomes import SPLITS, OutcomeTable
from bandit.policy import SKETCH_NAMESPACE, Policy, PolicyConfig
from bandit.reward import COST_UNIT_USD, RewardWeights, reward
from bandit.vwformat import shared_line

#: The cost weights of the sweep, in quality points per $0.001, from "quality only" to
#: "one thousandth of a dollar outweighs a correct answer": 0, then 0.0005 to 1 in steps
#: of 1.4-1.7x. Two operating points of a frontier can only be mixed along the line
#: between them, so a point the grid skips (one task past its cheaper model's turn,
#: another not yet) costs every router alike.
DEFAULT_COST_WEIGHTS = (0.0, 0.0005, 0.0007, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.007,
                        0.01, 0.015, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5,
                        0.7, 1.0)
#: The sweep of sessions 1-3 (12 weights, a subset of the above), for comparison.
COARSE_COST_WEIGHTS = (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2,
                       0.5, 1.0)
#: Every model answered every prompt of an outcome table, so none may be ruled out by
#: a context window: the catalog's models get one larger than any prompt.
_REPLAY_CONTEXT_WINDOW = 10**9

Progress = Callable[[int], None]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


CHANGE_KINDS = ("degrade", "add", "price")
#: The share of decisions a changed model must cross: below 10% after it degrades,
#: above 50% after it is added (price changes have none).
CHANGE_THRESHOLDS: Mapping[str, float] = {"degrade": 0.10, "add": 0.50}


@dataclass(frozen=True)
class Change:
    """A change of the world at a train step (0 = before the first train decision).

    >>> Change("price", "gpt-4", 500, input_price=1.0, output_price=2.0).label
    'price:gpt-4@500=1,2'
    """

    kind: str
    model: str
    step: int
    input_price: float | None = None
    output_price: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in CHANGE_KINDS:
            raise RequestError(f"change: kind must be one of {list(CHANGE_KINDS)}, "
                               f"got {self.kind!r}")
        if self.step < 0:
            raise RequestError(f"change {self.label}: the step must be >= 0")
        priced = self.input_price is not None and self.output_price is not None
        if (self.kind == "price") != priced:
            raise RequestError(f"change {self.label}: a price change, and only one, "
                               "needs both prices")
        if priced and not (0 <= float(self.input_price or 0) < float("inf")
                           and 0 <= float(self.output_price or 0) < float("inf")):
            raise RequestError(f"change {self.label}: prices must be finite and >= 0")

    @property
    def label(self) -> str:
        prices = ("" if self.input_price is None or self.output_price is None
                  else f"={self.input_price:g},{self.output_price:g}")
        return f"{self.kind}:{self.model}@{self.step}{prices}"


@dataclass(frozen=True)
class SimulatedJudge:
    """A judge standing in for the table's grades on train (seeded by the replay's seed).

    The judge's grade of an answer is ``clip(q + bias[model] + noise * z, 0, 1)`` with
    ``q`` the table's grade and ``z`` standard normal, drawn once per prompt and model (a
    judge at temperature 0 grades one answer alike whenever it is asked). A seeded
    ``human_share`` of the train prompts keeps its true grade as a person's score: at
    every cost weight the same prompts, whatever model the bandit chose for them. The
    bandit learns a person's score whole, and the judge's grade as the service does:
    calibrated per model (``calibrate``, once ``min_pairs`` people's scores of that
    model back the offset) and then weighted by ``weight``.

    >>> j = SimulatedJudge(noise=0.1, bias=(("m", 0.2),), human_share=0.05)
    >>> j.label, j.bias_of("m"), j.bias_of("other")
    ('noise 0.1, bias m=+0.2, human 5%, weight 0.8, calibrated after 20 pairs', 0.2, 0.0)
    """

    noise: float = 0.0
    bias: tuple[tuple[str, float], ...] = ()
    human_share: float = 0.0
    weight: float = DEFAULT_JUDGE_WEIGHT
    calibrate: bool = True
    min_pairs: int = DEFAULT_MIN_PAIRS

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise < float("inf"):
            raise RequestError(f"judge noise: must be a finite sd >= 0, got {self.noise!r}")
        if not 0.0 <= self.human_share <= 1.0:
            raise RequestError(
                f"judge human share: must be in [0, 1], got {self.human_share!r}")
        if not 0.0 <= self.weight <= 1.0:
            raise RequestError(f"judge weight: must be in [0, 1], got {self.weight!r}")
        if self.min_pairs < 1:
            raise RequestError(
                f"judge min_pairs: must be at least 1, got {self.min_pairs!r}")
        seen = Counter(m for m, _ in self.bias)
        for model, n in seen.items():
            if n > 1:
                raise RequestError(f"judge bias: {n} biases of {model!r}; give one")
        for model, b in self.bias:
            if not -1.0 <= b <= 1.0:
                raise RequestError(f"judge bias of {model!r}: must be in [-1, 1], got {b!r}")

    def bias_of(self, model: str) -> float:
        return dict(self.bias).get(model, 0.0)

    @property
    def label(self) -> str:
        parts = [f"noise {self.noise:g}"]
        parts += [f"bias {m}={b:+g}" for m, b in self.bias]
        parts += [f"human {self.human_share:.0%}", f"weight {self.weight:g}",
                  f"calibrated after {self.min_pairs} pairs" if self.calibrate
                  else "not calibrated"]
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"noise": self.noise, "bias": dict(self.bias), "human_share": self.human_share,
                "weight": self.weight, "calibrate": self.calibrate,
                "min_pairs": self.min_pairs}


def check_judge(table: OutcomeTable, judge: SimulatedJudge | None) -> None:
    """Refuse a bias of a model the table does not have."""
    for model, _ in () if judge is None else judge.bias:
        if model not in table.models:
            raise RequestError(f"judge bias: no model {model!r} in the table "
                               f"(it has: {', '.join(table.models)})")


#: Mixed into the replay's seed so that the judge's draws are not the train order's.
_JUDGE_STREAM = 23


class JudgedGrades:
    """What the bandit learns on train under a :class:`SimulatedJudge`, one decision at
    a time (:meth:`learn`): only the grade it is handed, the chosen model's, is read.

    >>> from bandit.outcomes import OutcomeTable
    >>> t = OutcomeTable.from_rows(["a", "b"], ["x", "x"], ["train", "train"], ["p", "q"],
    ...     ["m1", "m2"], quality=[[1, 0]] * 2, cost_usd=[[0, 0]] * 2,
    ...     output_chars=[[1, 1]] * 2)
    >>> g = JudgedGrades(SimulatedJudge(bias=(("m2", 0.2),)), t, seed=0)
    >>> g.learn(0, 1, 0.0), g.learn(1, 0, 1.0)   # 0.5 + 0.8 * (0.2 - 0.5), 0.5 + 0.8 * 0.5
    (0.26, 0.9)
    """

    def __init__(self, judge: SimulatedJudge, table: OutcomeTable, *, seed: int) -> None:
        self.judge = judge
        self.models = table.models
        rng = np.random.default_rng([seed, _JUDGE_STREAM])
        train = table.indices("train")
        self._human = np.zeros(table.n_prompts, dtype=bool)
        n_human = int(round(judge.human_share * len(train)))
        self._human[rng.choice(train, size=n_human, replace=False)] = True
        self._noise = (rng.standard_normal((table.n_prompts, table.n_models)) * judge.noise
                       if judge.noise > 0 else None)
        self._bias = np.array([judge.bias_of(m) for m in table.models], dtype=np.float64)
        self.calibration = Calibration(min_pairs=judge.min_pairs)
        self.steps = 0
        self.humans = 0
        #: Per model, the step from which its calibration applied.
        self.applied_from: dict[str, int] = {}

    def is_human(self, prompt: int) -> bool:
        return bool(self._human[prompt])

    def grade(self, prompt: int, model: int, quality: float) -> float:
        """The judge's raw grade of ``model``'s answer to ``prompt``, graded ``quality``."""
        z = 0.0 if self._noise is None else float(self._noise[prompt, model])
        return min(1.0, max(0.0, quality + float(self._bias[model]) + z))

    def learn(self, prompt: int, model: int, quality: float) -> float:
        """The quality the bandit learns for this decision (the chosen ``model``'s true
        grade is ``quality``); a person's score also teaches the calibration."""
        name = self.models[model]
        judged = self.grade(prompt, model, quality)
        self.steps += 1
        if self._human[prompt]:
            self.humans += 1
            self.calibration.learn_one(name, judge=judged, person=quality)
            return quality
        if self.judge.calibrate:
            if name not in self.applied_from and self.calibration.applies(name):
                self.applied_from[name] = self.steps - 1
            judged = self.calibration.calibrate(judged, name)
        return round(learned_quality(judged, self.judge.weight), 12)

    def summary(self, cost_weight: float) -> JudgeRun:
        return JudgeRun(cost_weight=cost_weight, decisions=self.steps, humans=self.humans,
                        calibration=tuple(
                            (m, off, n, self.applied_from.get(m))
                            for m, (off, n) in sorted(self.calibration.offsets().items())))


@dataclass(frozen=True)
class JudgeRun:
    """One cost weight's train stream under the judge: its decisions, how many had a
    person's score, and per model ``(model, offset, pairs, applied_from_step)`` of the
    calibration at the end of train (``applied_from_step`` ``None``: never applied)."""

    cost_weight: float
    decisions: int
    humans: int
    calibration: tuple[tuple[str, float, int, int | None], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"cost_weight": self.cost_weight, "decisions": self.decisions,
                "human_decisions": self.humans,
                "calibration": {m: {"offset": off, "pairs": n, "applied_from_step": at}
                                for m, off, n, at in self.calibration}}


#: The figures a judged replay is compared on (the bandit half's).
JUDGE_FIGURES = ("cost_pct_for_95", "cost_pct_for_98", "quality_pct_at_10")


@dataclass(frozen=True)
class JudgeReport:
    """The bandit under a simulated judge against the clean bandit of the same run."""

    judge: SimulatedJudge
    clean: RouterResult
    judged: RouterResult
    runs: tuple[JudgeRun, ...]

    def differences(self) -> dict[str, float | None]:
        """Judged minus clean, per figure of :data:`JUDGE_FIGURES` (``None`` where either
        is not reached)."""
        a, b = self.clean.metrics.to_dict(), self.judged.metrics.to_dict()
        return {k: None if a[k] is None or b[k] is None else float(b[k]) - float(a[k])
                for k in JUDGE_FIGURES}

    def to_dict(self) -> dict[str, Any]:
        a, b = self.clean.metrics.to_dict(), self.judged.metrics.to_dict()
        return {"judge": self.judge.to_dict(), "label": self.judge.label,
                "clean": {k: a[k] for k in (*JUDGE_FIGURES, "quality_pct_at_30", "aiq")},
                "judged": {k: b[k] for k in (*JUDGE_FIGURES, "quality_pct_at_30", "aiq")},
                "difference": self.differences(),
                "frontier": [p.to_dict() for p in self.judged.points],
                "hull": b["hull"],
                "by_cost_weight": [r.to_dict() for r in self.runs]}


@dataclass(frozen=True)
class ReplayConfig:
    """How a replay runs.

    >>> ReplayConfig(cost_weights=(0.0, 0.1), passes=2).to_dict()["cost_weights"]
    [0.0, 0.1]
    """

    seed: int = 0
    passes: int = 1
    cost_weights: tuple[float, ...] = DEFAULT_COST_WEIGHTS
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    curve_every: int = 100
    task_tag: bool = False
    full_info_passes: int = 1
    full_info_learning_rate: float = 0.05
    changes: tuple[Change, ...] = ()
    change_window: int = 100
    judge: SimulatedJudge | None = None

    def __post_init__(self) -> None:
        if self.passes < 1:
            raise RequestError(f"passes: must be at least 1, got {self.passes!r}")
        if not self.cost_weights:
            raise RequestError("cost_weights: give at least one cost weight")
        for w in self.cost_weights:
            RewardWeights(quality=1.0, cost=w, latency=0.0)  # validates w
        if self.full_info_passes < 1:
            raise RequestError(
                f"full_info_passes: must be at least 1, got {self.full_info_passes!r}")
        if not self.full_info_learning_rate > 0:
            raise RequestError("full_info_learning_rate: must be positive, "
                               f"got {self.full_info_learning_rate!r}")
        if self.curve_every < 1:
            raise RequestError(f"curve_every: must be at least 1, got {self.curve_every!r}")
        if self.change_window < 1:
            raise RequestError(
                f"change_window: must be at least 1, got {self.change_window!r}")
        kinds = Counter((c.kind, c.model) for c in self.changes)
        for (kind, model), n in kinds.items():
            if n > 1:
                raise RequestError(f"changes: {n} {kind} changes of {model!r}; give one")

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "passes": self.passes,
            "cost_weights": [float(w) for w in self.cost_weights],
            "exploration": self.policy.exploration,
            "policy": self.policy.to_dict(),
            "curve_every": self.curve_every,
            "task_tag": self.task_tag,
            "full_info_passes": self.full_info_passes,
            "full_info_learning_rate": self.full_info_learning_rate,
            "changes": [c.label for c in self.changes],
            "change_window": self.change_window,
            "judge": None if self.judge is None else self.judge.to_dict(),
        }


@dataclass(frozen=True)
class TaskSlice:
    """An operating point restricted to one task's test prompts."""

    task: str
    quality: float
    cost_per_prompt: float
    choices: tuple[tuple[str, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"quality": self.quality, "cost_per_prompt": self.cost_per_prompt,
                "choices": dict(self.choices)}


@dataclass(frozen=True)
class OperatingPoint:
    """One setting of a router evaluated on test: mean quality and cost per prompt.

    ``choices`` is the share of test prompts sent to each model (most used first);
    ``by_task`` the same per task, when the test split has more than one.
    """

    quality: float
    cost_per_prompt: float
    cost_weight: float | None = None
    model: str | None = None
    choices: tuple[tuple[str, float], ...] = ()
    by_task: tuple[TaskSlice, ...] = ()

    @property
    def xy(self) -> tuple[float, float]:
        return (self.cost_per_prompt, self.quality)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"quality": self.quality, "cost_per_prompt": self.cost_per_prompt}
        if self.cost_weight is not None:
            out["cost_weight"] = self.cost_weight
        if self.model is not None:
            out["model"] = self.model
        if self.choices:
            out["choices"] = dict(self.choices)
        if self.by_task:
            out["by_task"] = {t.task: t.to_dict() for t in self.by_task}
        return out


@dataclass(frozen=True)
class RouterResult:
    """A router's (or baseline's) operating points and its frontier metrics."""

    name: str
    label: str
    points: tuple[OperatingPoint, ...]
    metrics: FrontierMetrics
    peeks: bool = False
    #: Per task and model, the test AUC of the router's quality estimates
    #: (:func:`bandit.ceiling.within_task_auc`); only for the full-information baseline.
    within_task_auc: Mapping[str, Mapping[str, float | None]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "label": self.label,
            "peeks": self.peeks,
            "frontier": [p.to_dict() for p in self.points],
            **self.metrics.to_dict(),
        }
        if self.within_task_auc is not None:
            out["within_task_auc"] = {t: dict(m) for t, m in self.within_task_auc.items()}
        return out


@dataclass(frozen=True)
class CurvePoint:
    """Means over one block of online train steps ending at ``step`` (while exploring)."""

    step: int
    mean_reward: float
    mean_quality: float
    mean_cost_per_prompt: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "step": self.step,
            "mean_reward": self.mean_reward,
            "mean_quality": self.mean_quality,
            "mean_cost_per_prompt": self.mean_cost_per_prompt,
        }


@dataclass(frozen=True)
class BanditRun:
    """One cost weight's replay: its test point and its online learning curve."""

    point: OperatingPoint
    curve: tuple[CurvePoint, ...]
    #: The model chosen at each online train step (its index in the table's models).
    train_choices: tuple[int, ...] = ()
    #: Under a simulated judge (``config.judge``): what the train stream was taught.
    judge: JudgeRun | None = None


@dataclass(frozen=True)
class ReplayResult:
    """Everything a replay measured (see ``docs/replay.md`` for the JSON form)."""

    config: ReplayConfig
    models: tuple[str, ...]
    n_train: int
    n_test: int
    tasks: tuple[tuple[str, int, int], ...]
    best_single: OperatingPoint
    aiq_cost_max: float
    bandit: RouterResult
    baselines: tuple[RouterResult, ...]
    learning_curves: tuple[tuple[float, tuple[CurvePoint, ...]], ...]
    elapsed_seconds: float
    reference_curve: tuple[CurvePoint, ...] = ()
    split_assigned: bool = False
    clusters: ClusterReport | None = None
    changes: tuple[ChangeReport, ...] = ()
    #: With ``config.judge``: the bandit under the judge against ``bandit`` (clean).
    judge: JudgeReport | None = None

    def baseline(self, name: str) -> RouterResult:
        for b in self.baselines:
            if b.name == name:
                return b
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        m = self.bandit.metrics
        return {
            "schema": "routebandit.replay/1",
            "config": self.config.to_dict(),
            "data": {
                "n_train": self.n_train,
                "n_test": self.n_test,
                "models": list(self.models),
                "tasks": {t: {"train": a, "test": b} for t, a, b in self.tasks},
                "split_assigned": self.split_assigned,
            },
            "best_single": {
                "model": self.best_single.model,
                "quality": self.best_single.quality,
                "cost_per_prompt": self.best_single.cost_per_prompt,
            },
            "frontier": [p.to_dict() for p in self.bandit.points],
            "hull": m.to_dict()["hull"],
            "cost_pct_for_95": m.cost_pct_for_95,
            "cost_pct_for_98": m.cost_pct_for_98,
            "quality_pct_at_10": m.quality_pct_at_10,
            "quality_pct_at_30": m.quality_pct_at_30,
            "aiq": m.aiq,
            "aiq_cost_range": [0.0, self.aiq_cost_max],
            "baselines": {b.name: b.to_dict() for b in self.baselines},
            "learning_curve": [
                {"cost_weight": w, "points": [c.to_dict() for c in curve]}
                for w, curve in self.learning_curves
            ],
            "learning_curve_reference": {
                "model": self.best_single.model,
                "points": [
                    {"step": c.step, "mean_quality": c.mean_quality}
                    for c in self.reference_curve
                ],
            },
            "clusters": None if self.clusters is None else self.clusters.to_dict(),
            "changes": [c.to_dict() for c in self.changes],
            "judge": None if self.judge is None else self.judge.to_dict(),
            "elapsed_seconds": self.elapsed_seconds,
        }


# -- shared pieces ---------------------------------------------------------------------
def replay_catalog(table: OutcomeTable) -> Catalog:
    """The catalog of a table: its model names, no prices, no capabilities.

    >>> from bandit.outcomes import OutcomeTable
    >>> t = OutcomeTable.from_rows(["p"], ["t"], ["train"], ["hi"], ["a", "b"],
    ...     quality=[[1, 0]], cost_usd=[[0, 0]], output_chars=[[1, 1]])
    >>> replay_catalog(t).names
    ('a', 'b')
    """
    return Catalog.of(
        ModelSpec(name=m, context_window=_REPLAY_CONTEXT_WINDOW) for m in table.models
    )


def featurize_table(table: OutcomeTable, *, task_tag: bool = False) -> tuple[Context, ...]:
    """One :class:`Context` per prompt, computed once and shared by every configuration.

    With ``task_tag`` the table's task is passed as request metadata (``task=...``), as a
    client that labels its traffic would; by default the router sees the prompt only.
    """
    return tuple(
        featurize(parse_request(
            prompt=prompt, metadata={"task": task} if task_tag and task else None
        ))
        for prompt, task in zip(table.prompts, table.tasks, strict=True)
    )


def train_order(table: OutcomeTable, seed: int) -> IntArray:
    """The seeded random order in which train prompts are streamed."""
    return np.random.default_rng(seed).permutation(table.indices("train"))


def _point(
    table: OutcomeTable, rows: IntArray, chosen: IntArray, *, cost_weight: float | None
) -> OperatingPoint:
    q = table.quality[rows, chosen]
    c = table.cost_usd[rows, chosen]
    tasks = np.array(table.tasks)[rows]
    names = sorted(set(tasks.tolist()))
    by_task: list[TaskSlice] = []
    if len(names) > 1:
        for t in names:
            mine = tasks == t
            by_task.append(TaskSlice(
                task=t, quality=float(q[mine].mean()), cost_per_prompt=float(c[mine].mean()),
                choices=_shares(table, chosen[mine])))
    return OperatingPoint(
        quality=float(q.mean()), cost_per_prompt=float(c.mean()), cost_weight=cost_weight,
        choices=_shares(table, chosen), by_task=tuple(by_task),
    )


def _shares(table: OutcomeTable, chosen: IntArray) -> tuple[tuple[str, float], ...]:
    counts = np.bincount(chosen, minlength=table.n_models) / max(1, len(chosen))
    return tuple(sorted(
        ((table.models[j], float(s)) for j, s in enumerate(counts) if s > 0),
        key=lambda kv: (-kv[1], kv[0]),
    ))


def _argmax_cheapest(score: FloatArray, cost: FloatArray) -> IntArray:
    """Row-wise argmax of ``score``, breaking ties by the lower ``cost``."""
    best = score.max(axis=1, keepdims=True)
    tied = np.isclose(score, best, rtol=0.0, atol=1e-12)
    return np.asarray(np.where(tied, cost, np.inf).argmin(axis=1), dtype=np.int64)


def single_model_points(table: OutcomeTable) -> tuple[OperatingPoint, ...]:
    """Every model alone on the test split."""
    rows = table.indices("test")
    return tuple(
        OperatingPoint(
            quality=float(table.quality[rows, j].mean()),
            cost_per_prompt=float(table.cost_usd[rows, j].mean()),
            model=m,
        )
        for j, m in enumerate(table.models)
    )


def best_single_model(points: Sequence[OperatingPoint]) -> OperatingPoint:
    """Highest mean test quality; the cheaper one on ties.

    >>> best_single_model([OperatingPoint(0.8, 2.0, model="a"),
    ...                    OperatingPoint(0.8, 1.0, model="b")]).model
    'b'
    """
    return max(points, key=lambda p: (p.quality, -p.cost_per_prompt))


def random_point(table: OutcomeTable) -> OperatingPoint:
    """Uniform random routing on test, in expectation (exact, no sampling)."""
    rows = table.indices("test")
    return OperatingPoint(
        quality=float(table.quality[rows].mean()),
        cost_per_prompt=float(table.cost_usd[rows].mean()),
        choices=tuple((m, 1.0 / table.n_models) for m in table.models),
    )


def oracle_points(
    table: OutcomeTable, cost_weights: Sequence[float]
) -> tuple[OperatingPoint, ...]:
    """The oracle: it PEEKS at every test grade and picks, per prompt,
    ``argmax q - w * cost / $0.001`` (cheapest on ties). With ``w = 0`` it is the
    cheapest best-quality model per prompt.
    """
    rows = table.indices("test")
    q, c = table.quality[rows], table.cost_usd[rows]
    return tuple(
        _point(table, rows, _argmax_cheapest(q - w * c / COST_UNIT_USD, c), cost_weight=w)
        for w in sorted({0.0, *cost_weights})
    )


def per_task_points(
    table: OutcomeTable, cost_weights: Sequence[float], *, fit_on: str = "train"
) -> tuple[OperatingPoint, ...]:
    """A static per-task table, FULL INFORMATION and TASK LABEL: for each ``w``, every
    task is sent to the model with the best train ``mean q - w * mean cost / $0.001``
    on that task (cheapest on ties). What a router gains from knowing the task alone.

    ``fit_on="test"`` takes the means from the test split itself: that PEEKS, and gives
    the best any router can reach on test by telling tasks apart but not the prompts
    within a task (:func:`task_ceiling_points`).
    """
    if fit_on not in SPLITS:
        raise RequestError(f"fit_on: must be one of {list(SPLITS)}, got {fit_on!r}")
    fit, rows = table.indices(fit_on), table.indices("test")
    tasks = np.array(table.tasks)
    points = []
    for w in cost_weights:
        pick: dict[str, int] = {}
        for task in sorted(set(table.tasks)):
            idx = fit[tasks[fit] == task]
            if len(idx) == 0:  # a task only on test: fall back to the whole fitted split
                idx = fit
            q, c = table.quality[idx].mean(axis=0), table.cost_usd[idx].mean(axis=0)
            score = (q - w * c / COST_UNIT_USD)[None, :]
            pick[task] = int(_argmax_cheapest(score, c[None, :])[0])
        chosen = np.array([pick[table.tasks[i]] for i in rows], dtype=np.int64)
        points.append(_point(table, rows, chosen, cost_weight=w))
    return tuple(points)


def task_ceiling_points(table: OutcomeTable) -> tuple[OperatingPoint, ...]:
    """Routing by task with the TEST split's own means (PEEKS): :func:`per_task_points`
    fit on test, at every cost weight where an allocation can change
    (:func:`bandit.ceiling.task_breakpoints`). No router that cannot tell the prompts of
    a task apart gets above its hull on this test split.
    """
    return per_task_points(table, ceiling_weights(task_breakpoints(table, "test")),
                           fit_on="test")


# -- clusters of meaning -----------------------------------------------------------------
Paths = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ClusterReport:
    """The clusters of meaning a replay's tree found (:func:`cluster_report`).

    ``n_learned`` counts the train prompts the tree learned (those with an embedding);
    ``leaf_sizes`` the prompts of the table (both splits) the final tree puts in each
    leaf, largest first (leaves with none left out). Purity and ``nmi`` compare the test
    prompts' clusters, as routed, with the table's ``task`` column (prompts with an
    empty task or no embedding left out; ``None`` with fewer than two tasks):
    ``purity`` by leaf, ``purity_top`` by the first level below the root, ``nmi`` the
    normalized mutual information of the leaves and the tasks (arithmetic mean of the
    entropies).
    """

    n_clusters: int
    n_leaves: int
    depth: int
    leaf_sizes: tuple[int, ...]
    checkpoint_bytes: int
    cap: int
    split_after: int
    n_learned: int
    purity: float | None = None
    purity_top: float | None = None
    nmi: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_clusters": self.n_clusters, "n_leaves": self.n_leaves, "depth": self.depth,
            "leaf_sizes": list(self.leaf_sizes), "checkpoint_bytes": self.checkpoint_bytes,
            "cap": self.cap, "split_after": self.split_after, "n_learned": self.n_learned,
            "purity": self.purity, "purity_top": self.purity_top, "nmi": self.nmi,
        }


def grow_clusters(
    table: OutcomeTable,
    embeddings: npt.ArrayLike,
    *,
    seed: int,
    cap: int = DEFAULT_CAP,
    split_after: int = DEFAULT_SPLIT_AFTER,
) -> tuple[Paths, ClusterTree]:
    """Every prompt's clusters as the service would assign them, and the tree.

    ``embeddings`` has one row per prompt of the table; a row of zeros (or not finite)
    is a prompt without an embedding (no clusters, as an empty turn in the service).
    Train prompts come in :func:`train_order`, each assigned before it is learned; test
    prompts are assigned by the tree as train left it.

    >>> from bandit.outcomes import OutcomeTable
    >>> t = OutcomeTable.from_rows(["a", "b"], ["x", "x"], ["train", "test"], ["hi", "yo"],
    ...     ["m"], quality=[[1], [1]], cost_usd=[[0], [0]], output_chars=[[1], [1]])
    >>> paths, tree = grow_clusters(t, [[1.0, 0.0], [0.0, 0.0]], seed=0)
    >>> paths, len(tree)
    (((), ()), 1)
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] != table.n_prompts:
        raise RequestError(f"embeddings: expected one row per prompt ({table.n_prompts}), "
                           f"got an array of shape {e.shape}")
    tree = ClusterTree(e.shape[1], cap=cap, split_after=split_after, seed=seed)
    paths: list[tuple[int, ...]] = [()] * table.n_prompts
    for i in train_order(table, seed):
        paths[i] = tree.predict_one(e[i])
        tree.learn_one(e[i])
    for i in table.indices("test"):
        paths[i] = tree.predict_one(e[i])
    return tuple(paths), tree


def clustered_contexts(contexts: Sequence[Context], paths: Paths) -> tuple[Context, ...]:
    """Each context with its clusters (unchanged where it has none, as in the service)."""
    return tuple(with_clusters(c, p) if p else c for c, p in zip(contexts, paths, strict=True))


def _codes(values: Sequence[Hashable]) -> IntArray:
    index: dict[Hashable, int] = {}
    return np.array([index.setdefault(v, len(index)) for v in values], dtype=np.int64)


def _contingency(labels: Sequence[Hashable], truth: Sequence[Hashable]) -> FloatArray:
    if len(labels) != len(truth):
        raise RequestError("labels and truth: must have the same length")
    a, b = _codes(labels), _codes(truth)
    out = np.zeros((int(a.max(initial=-1)) + 1, int(b.max(initial=-1)) + 1))
    np.add.at(out, (a, b), 1.0)
    return out


def purity(labels: Sequence[Hashable], truth: Sequence[Hashable]) -> float:
    """Share of items whose cluster's most common true class is their own.

    >>> purity([0, 0, 1, 1], ["a", "a", "a", "b"])
    0.75
    """
    table = _contingency(labels, truth)
    return float(table.max(axis=1).sum() / max(1.0, table.sum()))


def normalized_mutual_information(
    labels: Sequence[Hashable], truth: Sequence[Hashable]
) -> float:
    """Mutual information of two labellings over the mean of their entropies, in [0, 1]
    (1 when both put everything in one class, as scikit-learn's default).

    >>> normalized_mutual_information([0, 0, 1, 1], ["b", "b", "a", "a"])
    1.0
    >>> normalized_mutual_information([0, 1, 0, 1], ["a", "a", "b", "b"])
    0.0
    """
    joint = _contingency(labels, truth)
    if joint.sum() == 0:
        return 1.0
    joint /= joint.sum()
    pa, pb = joint.sum(axis=1), joint.sum(axis=0)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum())
    ha = float(-(pa[pa > 0] * np.log(pa[pa > 0])).sum())
    hb = float(-(pb[pb > 0] * np.log(pb[pb > 0])).sum())
    if ha == 0.0 and hb == 0.0:
        return 1.0
    return max(0.0, mi / ((ha + hb) / 2.0))


def cluster_report(
    table: OutcomeTable, embeddings: npt.ArrayLike, paths: Paths, tree: ClusterTree
) -> ClusterReport:
    """What :func:`grow_clusters` found: size and shape of the tree, the bytes it adds
    to a checkpoint (its state without the embeddings waiting leaves hold, as the policy
    saves it) and, where the table has tasks, how well its clusters follow them."""
    leaves = tree.leaves()
    e = np.asarray(embeddings, dtype=np.float64)
    final = Counter(tree.predict_one(x) for x in e)
    final.pop((), None)
    test = [i for i in table.indices("test") if paths[i] and table.tasks[i]]
    truth = [table.tasks[i] for i in test]
    graded = len(set(truth)) > 1
    leaf_of = [paths[i] for i in test]
    return ClusterReport(
        n_clusters=len(tree),
        n_leaves=len(leaves),
        depth=max((len(p) for p in paths), default=0),
        leaf_sizes=tuple(sorted(final.values(), reverse=True)),
        checkpoint_bytes=len(json.dumps(tree.to_dict(waiting=False)).encode("utf-8")),
        cap=tree.cap,
        split_after=tree.split_after,
        n_learned=tree.count(0),
        purity=purity(leaf_of, truth) if graded else None,
        purity_top=purity([p[:1] for p in leaf_of], truth) if graded else None,
        nmi=normalized_mutual_information(leaf_of, truth) if graded else None,
    )


# -- changes of the world ----------------------------------------------------------------
@dataclass(frozen=True)
class ChangeResponse:
    """How the bandit answered one change at one cost weight.

    ``share_before`` is the changed model's share of the ``window`` train decisions
    before the change; ``windows`` its share in consecutive windows of ``window``
    decisions from the change on (a last shorter one included); ``decisions_to_cross``
    how many decisions after the change the share over the last ``window`` decisions
    first went below (``degrade``) or above (``add``) the threshold, ``None`` if it
    never did in the train stream (and for price changes).
    """

    cost_weight: float
    share_before: float | None
    windows: tuple[float, ...]
    decisions_to_cross: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"cost_weight": self.cost_weight, "share_before": self.share_before,
                "windows": list(self.windows), "decisions_to_cross": self.decisions_to_cross}


@dataclass(frozen=True)
class ChangeReport:
    """The bandit's answer to one :class:`Change`, at every cost weight of the sweep."""

    change: Change
    window: int
    threshold: float | None
    responses: tuple[ChangeResponse, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"change": self.change.label, "kind": self.change.kind,
                "model": self.change.model, "step": self.change.step,
                "window": self.window, "threshold": self.threshold,
                "by_cost_weight": [r.to_dict() for r in self.responses]}


def check_changes(table: OutcomeTable, changes: Sequence[Change]) -> None:
    """Refuse changes of models the table does not have, or after its last train step."""
    n_train = len(table.indices("train"))
    for c in changes:
        if c.model not in table.models:
            raise RequestError(f"change {c.label}: no model {c.model!r} in the table "
                               f"(it has: {', '.join(table.models)})")
        if c.step >= n_train:
            raise RequestError(f"change {c.label}: step {c.step} is past the last of the "
                               f"{n_train} train steps")
    if len({c.model for c in changes if c.kind == "add" and c.step > 0}) == table.n_models:
        raise RequestError("changes: every model is added later; "
                           "one must be there from the start")


def world_after(
    table: OutcomeTable, contexts: Sequence[Context], changes: Sequence[Change]
) -> OutcomeTable:
    """The table as the world is after every change: a degraded model's answers all
    graded 0, a repriced model's cost per prompt from its new list prices (USD per
    million tokens: the prompt's tokens and ``output_chars / 4`` answer tokens).
    ``add`` changes nothing here. Without changes, the table itself.

    >>> from bandit.outcomes import OutcomeTable
    >>> t = OutcomeTable.from_rows(["a"], ["x"], ["train"], ["hi"], ["m1", "m2"],
    ...     quality=[[1, 1]], cost_usd=[[0.1, 0.1]], output_chars=[[4000, 4]])
    >>> w = world_after(t, featurize_table(t), [Change("degrade", "m1", 0),
    ...                                         Change("price", "m1", 0, 0.0, 1.0)])
    >>> w.quality.tolist(), w.cost_usd.tolist()
    ([[0.0, 1.0]], [[0.001, 0.1]])
    """
    if not changes:
        return table
    quality, cost = table.quality.copy(), table.cost_usd.copy()
    for c in changes:
        j = table.models.index(c.model)
        if c.kind == "degrade":
            quality[:, j] = 0.0
        elif c.kind == "price":
            spec = ModelSpec(name=c.model, input_price=float(c.input_price or 0.0),
                             output_price=float(c.output_price or 0.0))
            cost[:, j] = [spec.call_cost_usd(input_tokens=ctx.input_tokens,
                                             output_tokens=int(chars / 4))
                          for ctx, chars in zip(contexts, table.output_chars[:, j],
                                                strict=True)]
    return dataclasses.replace(table, quality=quality, cost_usd=cost)


def change_response(
    choices: Sequence[int], model: int, change: Change, *, cost_weight: float, window: int
) -> ChangeResponse:
    """The changed model's shares after ``change`` in one run's train ``choices``.

    >>> r = change_response([0] * 300 + [1] * 300, 0, Change("degrade", "m", 300),
    ...                     cost_weight=0.0, window=100)
    >>> r.share_before, r.windows, r.decisions_to_cross
    (1.0, (0.0, 0.0, 0.0), 91)
    """
    mine = np.asarray(choices, dtype=np.int64) == model
    at = change.step
    before = mine[max(0, at - window):at]
    windows = tuple(float(mine[s:s + window].mean()) for s in range(at, len(mine), window))
    threshold = CHANGE_THRESHOLDS.get(change.kind)
    crossed: int | None = None
    if threshold is not None:
        # the share over the last `window` decisions, after each decision from the change on
        run = np.concatenate([[0], np.cumsum(mine)])
        for n in range(at, len(mine) + 1):
            lo = max(0, n - window)
            share = (run[n] - run[lo]) / max(1, n - lo)
            if (share < threshold) if change.kind == "degrade" else (share > threshold):
                crossed = n - at
                break
    return ChangeResponse(cost_weight=cost_weight,
                          share_before=float(before.mean()) if before.size else None,
                          windows=windows, decisions_to_cross=crossed)


def change_reports(
    table: OutcomeTable, runs: Sequence[BanditRun], config: ReplayConfig
) -> tuple[ChangeReport, ...]:
    """One :class:`ChangeReport` per change of ``config``, from the sweep's runs."""
    return tuple(
        ChangeReport(
            change=c, window=config.change_window, threshold=CHANGE_THRESHOLDS.get(c.kind),
            responses=tuple(
                change_response(r.train_choices, table.models.index(c.model), c,
                                cost_weight=w, window=config.change_window)
                for w, r in zip(config.cost_weights, runs, strict=True)))
        for c in config.changes)


# -- the bandit --------------------------------------------------------------------------
def replay_bandit(
    table: OutcomeTable,
    contexts: Sequence[Context],
    *,
    cost_weight: float,
    config: ReplayConfig,
    progress: Progress | None = None,
) -> BanditRun:
    """Replay the bandit at one cost weight: learn online on train, evaluate on test.

    Only the chosen model's quality, cost and output length are ever read on train.
    With ``config.judge`` the bandit learns the simulated judge's grade of it
    (:class:`JudgedGrades`); the learning curve's quality stays the true grade.

    >>> from bandit.outcomes import OutcomeTable
    >>> t = OutcomeTable.from_rows(
    ...     ["a", "b", "c"], ["x"] * 3, ["train", "train", "test"], ["hi", "yo", "hey"],
    ...     ["m1", "m2"], quality=[[1, 0]] * 3, cost_usd=[[0.001, 0.002]] * 3,
    ...     output_chars=[[4, 8]] * 3)
    >>> run = replay_bandit(t, featurize_table(t), cost_weight=0.1, config=ReplayConfig())
    >>> len(run.curve), run.point.cost_weight
    (1, 0.1)
    """
    weights = RewardWeights(quality=1.0, cost=cost_weight, latency=0.0)
    policy = Policy(replay_catalog(table), config=config.policy, weights=weights,
                    seed=config.seed)
    log: list[tuple[Decision, float, float]] = []
    trace: list[tuple[float, float, float]] = []
    check_changes(table, config.changes)
    after = world_after(table, contexts, config.changes)
    changed_q = {table.models.index(c.model): c.step for c in config.changes
                 if c.kind == "degrade"}
    changed_c = {table.models.index(c.model): c.step for c in config.changes
                 if c.kind == "price"}
    added = [(c.step, c.model) for c in config.changes if c.kind == "add"]
    judged = (None if config.judge is None
              else JudgedGrades(config.judge, table, seed=config.seed))
    choices: list[int] = []
    for step, i in enumerate(train_order(table, config.seed)):
        absent = {m for at, m in added if step < at}
        allow = [m for m in table.models if m not in absent] if absent else None
        decision = policy.decide(contexts[i], explore=True, allow=allow)
        j = table.models.index(decision.model)
        q = float((after if step >= changed_q.get(j, step + 1) else table).quality[i, j])
        c = float((after if step >= changed_c.get(j, step + 1) else table).cost_usd[i, j])
        choices.append(j)
        learned = q if judged is None else judged.learn(int(i), j, q)
        r = reward(weights, quality=learned, cost_usd=c)
        policy.learn(decision, r, outcome={
            "quality": learned, "cost_usd": c,
            "output_tokens": float(table.output_chars[i, j]) / 4.0})
        log.append((decision, r, learned))
        trace.append((r, q, c))
        if progress is not None:
            progress(1)
    rng = random.Random(config.seed)
    for _ in range(config.passes - 1):
        order = list(range(len(log)))
        rng.shuffle(order)
        for k in order:
            # The logged decision as it was, with its logged probability: nothing about
            # the models it did not choose is looked at.
            decision, r, q = log[k]
            policy.learn(decision, r, outcome={"quality": q}, revisit=True)
        if progress is not None:
            progress(len(log))
    rows = table.indices("test")
    chosen = np.empty(len(rows), dtype=np.int64)
    for n, i in enumerate(rows):
        chosen[n] = table.models.index(policy.decide(contexts[i], explore=False).model)
        if progress is not None:
            progress(1)
    return BanditRun(point=_point(after, rows, chosen, cost_weight=cost_weight),
                     curve=learning_curve(trace, every=config.curve_every),
                     train_choices=tuple(choices),
                     judge=None if judged is None else judged.summary(cost_weight))


def curve_blocks(n: int, every: int) -> list[tuple[int, int]]:
    """``[start, end)`` of consecutive blocks of ``every`` steps covering ``n`` steps.

    A last block shorter than half of ``every`` joins the one before it, so no point
    of a learning curve is the mean of a handful of steps.

    >>> curve_blocks(240, 100)
    [(0, 100), (100, 240)]
    >>> curve_blocks(250, 100)
    [(0, 100), (100, 200), (200, 250)]
    """
    bounds = [(s, min(s + every, n)) for s in range(0, n, every)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < every / 2:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def learning_curve(
    trace: Sequence[tuple[float, float, float]], *, every: int
) -> tuple[CurvePoint, ...]:
    """Block means of online ``(reward, quality, cost)`` steps (see :func:`curve_blocks`)."""
    arr = np.asarray(trace, dtype=np.float64).reshape(-1, 3)
    out = []
    for start, end in curve_blocks(len(arr), every):
        r, q, c = arr[start:end].mean(axis=0)
        out.append(CurvePoint(step=end, mean_reward=float(r), mean_quality=float(q),
                              mean_cost_per_prompt=float(c)))
    return tuple(out)


def reference_curve(
    table: OutcomeTable, model: str, *, config: ReplayConfig
) -> tuple[CurvePoint, ...]:
    """What always calling ``model`` scores on the same blocks of train prompts.

    For the learning-curve plot only (it reads that model's train grades, which the
    bandit never sees): blocks of prompts differ in difficulty, and this line shows by
    how much. Its ``mean_reward`` is the quality (no cost term).
    """
    j = table.models.index(model)
    order = train_order(table, config.seed)
    q = table.quality[order, j]
    c = table.cost_usd[order, j]
    return learning_curve(list(zip(q, q, c, strict=True)), every=config.curve_every)


# -- the full-information baseline -------------------------------------------------------
def _classifier_args(config: ReplayConfig) -> list[str]:
    pc = config.policy
    args = ["--quiet", "--random_seed", str(config.seed), "-b", str(pc.bits),
            "--loss_function", "logistic", "--link", "logistic",
            "-l", f"{config.full_info_learning_rate:g}", "--power_t", f"{pc.power_t:g}"]
    for pair in pc.interactions:
        args += ["-q", pair]
    if pc.l2:
        args += ["--l2", f"{pc.l2:g}"]
    return args


def full_information_predictions(
    table: OutcomeTable,
    contexts: Sequence[Context],
    *,
    config: ReplayConfig,
    progress: Progress | None = None,
) -> tuple[FloatArray, FloatArray]:
    """FULL-INFORMATION baseline: learn every model's grade on every train prompt.

    A Vowpal Wabbit logistic regression on the bandit's own features (the shared
    namespaces of the prompt, the ``a`` namespace of the model, the same interactions)
    learns the probability of a good answer from all ``n_train * k`` train grades
    (a grade ``q`` in [0, 1] is a positive example of weight ``q`` and a negative one of
    weight ``1 - q``), ``config.full_info_passes`` times in seeded random orders.
    Expected costs are per-model means of cost per prompt token over every train call
    (:class:`~bandit.estimates.Estimates`). Unlike the bandit, this sees what unchosen
    models would have scored: it is a reference, not a router that could learn from
    live traffic.

    Returns ``(predicted_quality, expected_cost_usd)`` for the test split, each of shape
    ``(n_test, k)``.
    """
    catalog = replay_catalog(table)
    try:
        ws = vw.Workspace(_classifier_args(config))
        parser = vw.TextFormatParser(ws)
    except Exception as exc:  # VW raises plain RuntimeError/ValueError on bad args
        raise PolicyError(f"cannot create the Vowpal Wabbit regressor: {exc}") from exc
    # The policy's own action features (with no cost weight, so no cost term), through
    # its public API: whatever the bandit sees of a model, this baseline sees too.
    probe = Policy(catalog, config=config.policy, seed=config.seed,
                   weights=RewardWeights(quality=1.0, cost=0.0, latency=0.0))

    def lines(ctx: Context) -> list[str]:
        shared = shared_line(ctx)[len("shared"):]
        return [f"{shared} {a.features}" for a in probe.actions_for(ctx)]

    estimates = Estimates()
    order = train_order(table, config.seed)
    for i in order:
        for j, m in enumerate(table.models):
            estimates.observe(m, input_tokens=contexts[i].input_tokens,
                              output_tokens=float(table.output_chars[i, j]) / 4.0,
                              cost_usd=float(table.cost_usd[i, j]), latency_ms=None,
                              sketch=contexts[i].dense.get(SKETCH_NAMESPACE))
    rng = np.random.default_rng(config.seed)
    for p in range(config.full_info_passes):
        for i in order if p == 0 else rng.permutation(order):
            arm_lines = lines(contexts[i])
            for j in rng.permutation(table.n_models):
                q = float(table.quality[i, j])
                for label, weight in ((1, q), (-1, 1.0 - q)):
                    if weight > 0:
                        ws.learn_one(parser.parse_line(f"{label} {weight:.6g}{arm_lines[j]}"))
            if progress is not None:
                progress(1)
    rows = table.indices("test")
    pred = np.empty((len(rows), table.n_models))
    cost = np.empty((len(rows), table.n_models))
    specs = list(catalog)
    for n, i in enumerate(rows):
        arm_lines = lines(contexts[i])
        prompt = describe(contexts[i].input_tokens, contexts[i].dense.get(SKETCH_NAMESPACE))
        # Every model's cost fit in one matrix product, as Policy.actions_for does.
        fits = estimates.fitted(specs, prompt)
        for j, spec in enumerate(specs):
            score = ws.predict_one(parser.parse_line(arm_lines[j]))
            if not isinstance(score, (int, float)):
                raise PolicyError(f"the regressor predicted {score!r}, not a number")
            pred[n, j] = float(score)
            cost[n, j] = estimates.cost_usd(spec, input_tokens=contexts[i].input_tokens,
                                            max_tokens=None, fit=fits[j])
        if progress is not None:
            progress(1)
    return np.clip(pred, 0.0, 1.0), cost


def full_information_points(
    table: OutcomeTable,
    predicted_quality: FloatArray,
    expected_cost_usd: FloatArray,
    cost_weights: Sequence[float],
) -> tuple[OperatingPoint, ...]:
    """The full-information baseline's test points: ``argmax q_hat - w * c_hat / $0.001``."""
    rows = table.indices("test")
    return tuple(
        _point(table, rows, _argmax_cheapest(
            predicted_quality - w * expected_cost_usd / COST_UNIT_USD, expected_cost_usd),
            cost_weight=w)
        for w in cost_weights
    )


# -- the whole run -----------------------------------------------------------------------
def work_units(table: OutcomeTable, config: ReplayConfig) -> int:
    """How many progress units :func:`replay` reports (for a progress bar's total)."""
    n_train, n_test = len(table.indices("train")), len(table.indices("test"))
    bandit = (n_train * config.passes + n_test) * len(config.cost_weights)
    if config.judge is not None:  # the sweep runs clean and judged
        bandit *= 2
    return table.n_prompts + bandit + n_train * config.full_info_passes + n_test


def replay(
    table: OutcomeTable,
    config: ReplayConfig | None = None,
    *,
    embeddings: npt.ArrayLike | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Run the whole replay benchmark on an outcome table (pure: no printing, no files).

    ``embeddings``, one row per prompt (a row of zeros: none), routes by meaning as the
    service does (:func:`grow_clusters`); every router and baseline sees the same
    clustered contexts. With ``config.judge`` the bandit's sweep runs twice, clean
    (``bandit``) and under the judge (``judge``). ``progress``, when given, is called
    with the number of work units just done (their total is :func:`work_units`).
    """
    config = config or ReplayConfig()
    start = time.perf_counter()
    contexts = featurize_table(table, task_tag=config.task_tag)
    found: ClusterReport | None = None
    if embeddings is not None:
        paths, tree = grow_clusters(table, embeddings, seed=config.seed)
        contexts = clustered_contexts(contexts, paths)
        found = cluster_report(table, embeddings, paths, tree)
    check_changes(table, config.changes)
    check_judge(table, config.judge)
    streamed, table = table, world_after(table, contexts, config.changes)
    if progress is not None:
        progress(table.n_prompts)
    singles = single_model_points(table)
    best = best_single_model(singles)
    c_max = max(p.cost_per_prompt for p in singles)
    if c_max <= 0:
        raise RequestError("outcome table: every model costs nothing on test; "
                           "a cost-quality frontier needs costs")

    def result(name: str, label: str, points: Sequence[OperatingPoint], *,
               peeks: bool = False,
               auc: Mapping[str, Mapping[str, float | None]] | None = None) -> RouterResult:
        metrics = frontier_metrics(
            [p.xy for p in points], reference_cost=best.cost_per_prompt,
            reference_quality=best.quality, c_max=c_max)
        return RouterResult(name=name, label=label, points=tuple(points), metrics=metrics,
                            peeks=peeks, within_task_auc=auc)

    clean = dataclasses.replace(config, judge=None)
    runs = [
        replay_bandit(streamed, contexts, cost_weight=w, config=clean, progress=progress)
        for w in config.cost_weights
    ]
    bandit = result("bandit", "routebandit (VW cb_explore_adf, bandit feedback)",
                    [r.point for r in runs])
    judged: JudgeReport | None = None
    if config.judge is not None:
        judged_runs = [
            replay_bandit(streamed, contexts, cost_weight=w, config=config,
                          progress=progress)
            for w in config.cost_weights
        ]
        judged = JudgeReport(
            judge=config.judge, clean=bandit,
            judged=result("bandit_judged", "routebandit learning from a simulated judge "
                          f"on train ({config.judge.label})",
                          [r.point for r in judged_runs]),
            runs=tuple(r.judge for r in judged_runs if r.judge is not None))
    pred, cost = full_information_predictions(table, contexts, config=config,
                                              progress=progress)
    baselines = (
        result("full_information",
               "full-information baseline, sees every model's grade on train",
               full_information_points(table, pred, cost, config.cost_weights),
               auc=within_task_auc(table, pred)),
        result("per_task", "per-task table, full information plus the task label: "
               "best model per task on train", per_task_points(table, config.cost_weights)),
        result("task_ceiling", "routing by task on the test split's own means (peeks): "
               "the most a router reaches without telling a task's prompts apart",
               task_ceiling_points(table), peeks=True),
        result("oracle", "oracle (peeks at test grades)",
               oracle_points(table, config.cost_weights), peeks=True),
        result("random", "uniform random routing", [random_point(table)]),
        result("single_models", "single models (and random mixtures of them)", singles),
    )
    counts = Counter(zip(table.tasks, table.splits, strict=True))
    return ReplayResult(
        config=config,
        models=table.models,
        n_train=len(table.indices("train")),
        n_test=len(table.indices("test")),
        tasks=tuple((t, counts[t, "train"], counts[t, "test"]) for t in sorted(set(table.tasks))),
        best_single=best,
        aiq_cost_max=c_max,
        bandit=bandit,
        baselines=baselines,
        learning_curves=tuple((w, r.curve) for w, r in zip(config.cost_weights, runs,
                                                            strict=True)),
        elapsed_seconds=time.perf_counter() - start,
        split_assigned=table.split_assigned,
        reference_curve=reference_curve(table, str(best.model), config=config),
        clusters=found,
        changes=change_reports(table, runs, config),
        judge=judged,
    )
