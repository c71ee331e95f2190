"""The contextual-bandit policy: Vowpal Wabbit's contextual-bandit ADF learner over the catalog.

Every model is an action described by features (identity, provider, log price, context
window, capabilities), so a model added to the catalog later is scored from its features
on its first request and explored. Hard constraints filter the catalog before scoring.

How a decision is made (the explore-ADF scheme of VW's ``cb_explore_adf``, split in two
so that cost is never guessed by regression):

1. VW's ``cb_adf`` learner (multi-task regression by default, trained on logged bandit
   data with the logged probabilities) predicts each eligible model's *quality* for the
   context.
2. The known part of the reward is added exactly: the expected cost and latency of each
   model (list prices and measured means, :mod:`bandit.estimates`) under the request's
   weights. ``score = w_q * quality - penalty``.
3. Exploration (:mod:`bandit.exploration`: SquareCB by default, epsilon-greedy or
   softmax) turns scores into a pmf; the model is sampled with the policy's own seeded
   generator and its probability is logged.

Learning a cost that the catalog already knows would cost samples and, worse, confound
the model's identity with its price; a per-request change of weights would then need new
data before it had any effect. Here it acts on the very next request.
"""

from __future__ import annotations

import json
import math
import random
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt
import vowpal_wabbit_next as vw

from bandit.catalog import Catalog
from bandit.clusters import ClusterTree
from bandit.constraints import eligible_models
from bandit.decision import Action, Decision
from bandit.drift import MIN_BASELINE_GRADES, ChangeDetector, ChangeEvent
from bandit.errors import PolicyError
from bandit.estimates import Estimates, describe
from bandit.exploration import (
    ThompsonPool,
    epsilon_greedy,
    greedy,
    softmax,
    squarecb,
    thompson,
)
from bandit.features import FEATURE_VERSION, Context
from bandit.kinds import KindStats, kind_path, refine
from bandit.reward import RewardWeights, penalty
from bandit.vwformat import action_features, labelled, shared_line

EXPLORATIONS = ("squarecb", "thompson", "epsilon", "softmax")
_MAGIC = b"RBPOLICY1\n"
#: The dense namespace the cost and answer-length fits read (bandit.estimates.describe).
SKETCH_NAMESPACE = "e"
_RETIRED_CONFIG_FIELDS = frozenset({"bag_size", "cover_size", "mellowness", "normalized"})


@dataclass(frozen=True)
class PolicyConfig:
    """How the policy explores and learns.

    >>> PolicyConfig(cb_type="dr").vw_args(seed=7)[:3]
    ['--cb_adf', '--cb_type', 'dr']
    """

    exploration: str = "thompson"
    epsilon: float = 0.05
    gamma_scale: float = 1.0
    gamma_exponent: float = 0.5
    softmax_lambda: float = 10.0
    cb_type: str = "mtr"
    learning_rate: float = 0.05
    power_t: float = 0.5
    l2: float = 0.0
    bits: int = 20
    # Compact context namespaces only: tags, the dense sketch, the system prompt and the
    # numeric features, each crossed with the action. Sparse word namespaces (``qa``,
    # ``ua``) add hundreds of features per prompt whose weights a bandit, seeing one
    # grade in K, cannot estimate before they drown the signal (docs/policy.md); turn
    # them on for high-traffic deployments.
    interactions: tuple[str, ...] = ("ta", "ea", "sa", "na")
    # The largest weight one grade gets in VW's regression (1 / logged probability,
    # capped). 1 = every grade counts once, a direct-method regression: with VW's
    # adaptive learning rates, one explored grade weighted 1/p = 30 freezes a model's
    # estimate near that single label (docs/policy.md, "Importance weights").
    max_importance_weight: float = 1.0
    # Pool grades per kind of prompt (bandit.kinds): the regression's prediction is the
    # prior, worth ``prior_strength`` grades, and the kind's observed grades update it.
    kind_pooling: bool = True
    prior_strength: float = 8.0
    # A kind is established (its prior no longer depends on the prompt, and Thompson
    # sampling explores it) once it has this many grades; before, SquareCB.
    min_kind_grades: int = 20
    # Thompson sampling's pmf is estimated from this many posterior draws.
    thompson_draws: int = 64
    # Evidence that ages (docs/policy.md, "Adapting to change"): a model's grades on a
    # kind, and its measured cost, latency and answer length, count up to this many;
    # beyond, the oldest fade (0: nothing is ever forgotten).
    kind_memory: int = 1000
    estimate_memory: int = 1000
    # A model whose grades shift (bandit.drift: a two-sided CUSUM per model) has its
    # quality forgotten and learned afresh, as an operator's reset-model would.
    detect_changes: bool = True
    change_threshold: float = 8.0
    change_drift: float = 0.25
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.exploration not in EXPLORATIONS:
            raise PolicyError(
                f"exploration: must be one of {', '.join(EXPLORATIONS)}, got {self.exploration!r}"
            )
        if not 0.0 <= self.epsilon <= 1.0:
            raise PolicyError(f"epsilon: must be in [0, 1], got {self.epsilon!r}")
        if self.cb_type not in ("mtr", "ips", "dr", "dm"):
            raise PolicyError(f"cb_type: must be mtr, ips, dr or dm, got {self.cb_type!r}")
        if not 1 <= self.bits <= 30:
            raise PolicyError(f"bits: must be between 1 and 30, got {self.bits!r}")
        if not (math.isfinite(self.max_importance_weight) and self.max_importance_weight >= 1):
            raise PolicyError("max_importance_weight: must be a number >= 1, "
                              f"got {self.max_importance_weight!r}")
        if not 1 <= self.thompson_draws <= 10_000:
            raise PolicyError(
                f"thompson_draws: must be between 1 and 10000, got {self.thompson_draws!r}")
        if self.min_kind_grades < 0:
            raise PolicyError("min_kind_grades: must be >= 0, "
                              f"got {self.min_kind_grades!r}")
        for name in ("kind_memory", "estimate_memory"):
            value = getattr(self, name)
            if value != 0 and not 50 <= value <= 10_000_000:
                raise PolicyError(f"{name}: must be 0 (never forget) or between 50 and "
                                  f"10000000, got {value!r}")
        for name in ("gamma_scale", "learning_rate", "softmax_lambda", "prior_strength",
                     "change_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise PolicyError(f"{name}: must be a positive number, got {value!r}")
        if not (math.isfinite(self.change_drift) and 0 <= self.change_drift < 1):
            raise PolicyError(f"change_drift: must be a number in [0, 1), "
                              f"got {self.change_drift!r}")
        for pair in self.interactions:
            if len(pair) < 2 or not pair.isalpha():
                raise PolicyError(f"interactions: {pair!r} is not a pair of namespace letters")

    def vw_args(self, *, seed: int) -> list[str]:
        args = ["--cb_adf", "--cb_type", self.cb_type]
        for pair in self.interactions:
            args += ["-q", pair]
        # VW's default update (adaptive, normalized, invariant) with a small learning
        # rate: the regression must estimate mean quality from Bernoulli grades, and
        # VW's default rate of 0.5 chases the last few labels (docs/policy.md).
        args += ["-l", f"{self.learning_rate:g}", "--power_t", f"{self.power_t:g}",
                 "-b", str(self.bits), "--random_seed", str(seed), "--quiet"]
        if self.l2:
            args += ["--l2", f"{self.l2:g}"]
        return args + list(self.extra_args)

    def explore(self, scores: list[float], *, n_learned: int) -> list[float]:
        """The pmf this configuration puts over ``scores``.

        ``thompson`` needs posteriors, which :class:`Policy` has: here (a kind with too
        few grades) it falls back to SquareCB.
        """
        if self.exploration == "epsilon":
            return epsilon_greedy(scores, self.epsilon)
        if self.exploration == "softmax":
            return softmax(scores, self.softmax_lambda)
        gamma = self.gamma_scale * (n_learned + 1) ** self.gamma_exponent
        return squarecb(scores, gamma)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["interactions"] = list(self.interactions)
        out["extra_args"] = list(self.extra_args)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PolicyConfig:
        known = {f for f in cls.__dataclass_fields__}
        # Fields of earlier releases that no longer mean anything (VW-side exploration
        # variants) are dropped so that older saved configurations still load.
        raw = {k: v for k, v in raw.items() if k not in _RETIRED_CONFIG_FIELDS}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise PolicyError(f"policy config: unknown field {unknown[0]!r}")
        values = dict(raw)
        for name in ("interactions", "extra_args"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def _penalties(actions: tuple[Action, ...], weights: RewardWeights) -> list[float]:
    """The known part of each action's reward: its weighted expected cost and latency."""
    return [penalty(weights, cost_usd=a.expected_cost_usd, latency_ms=a.expected_latency_ms)
            for a in actions]


def _combine(quality: list[float], actions: tuple[Action, ...],
             weights: RewardWeights) -> list[float]:
    """Expected reward per action: weighted predicted quality minus the known penalty."""
    return [weights.quality * q - p
            for q, p in zip(quality, _penalties(actions, weights), strict=True)]


#: Thompson draw pools kept at most (a pool is 64 rows of draws for each model).
MAX_POOLS = 256
#: Change events a policy remembers (the newest), in its checkpoints and versions.
MAX_CHANGE_EVENTS = 100


class _Beliefs(NamedTuple):
    means: list[float]  # posterior mean quality per action
    strengths: list[float]  # posterior strength (prior strength + grades) per action
    grades: float  # grades of the prompt's kind, all models together
    kind: str | None


@dataclass
class _State:
    n_learned: int = 0
    version: str = "local"
    parent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Policy:
    """Choose a model for a context; learn from the reward of the model chosen.

    >>> from bandit.catalog import Catalog
    >>> from bandit.features import featurize, parse_request
    >>> cat = Catalog.from_dict({"models": [{"name": "a"}, {"name": "b"}]})
    >>> policy = Policy(cat, seed=1)
    >>> d = policy.decide(featurize(parse_request(prompt="hello")))
    >>> d.model in cat.names, round(sum(p for _, p in d.pmf), 6)
    (True, 1.0)
    >>> policy.learn(d, reward=1.0)
    >>> policy.n_learned
    1
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        config: PolicyConfig | None = None,
        weights: RewardWeights | None = None,
        seed: int = 0,
        _model_data: bytes | None = None,
    ) -> None:
        self.config = config or PolicyConfig()
        self.weights = weights or RewardWeights()
        self.seed = int(seed)
        self._catalog = catalog
        self._estimates = Estimates(memory=self.config.estimate_memory)
        self._kinds = KindStats(memory=self.config.kind_memory)
        # Adapting to change (bandit.drift): the detector's sums per model, each model's
        # generation (bumped by reset_model: a new identity for VW), the events so far.
        self._detector = ChangeDetector(threshold=self.config.change_threshold,
                                        drift=self.config.change_drift)
        self._generations: dict[str, int] = {}
        self._changes: list[ChangeEvent] = []
        self._change_counts: dict[str, int] = {}
        # Clusters of meaning (bandit.clusters): the service's tree of prompt
        # embeddings, saved and restored with the policy. None: no embeddings.
        self._clusters: ClusterTree | None = None
        self._state = _State()
        self._rng = random.Random(self.seed)
        # Thompson sampling's posterior draws (numpy), kept per kind of prompt and set of
        # models between decisions (least recently used first out).
        self._draw_rng = np.random.default_rng(self.seed)
        self._pools: OrderedDict[tuple[str | None, tuple[str, ...]], ThompsonPool] = (
            OrderedDict())
        self._lock = threading.RLock()
        self._action_cache: dict[str, Any] = {}
        # Action feature text by model name, for the catalog it was built from (catalogs
        # are immutable, so an identity check tells when to rebuild).
        self._action_text: tuple[Catalog | None, dict[str, str]] = (None, {})
        # Shared features only matter through their interactions with the action
        # namespace (ADF adds first-order shared features to every action alike), so
        # only the namespaces that are interacted are sent to VW.
        self._shared_namespaces = frozenset(
            ch for pair in self.config.interactions for ch in pair if ch != "a"
        )
        try:
            self._ws = vw.Workspace(self.config.vw_args(seed=self.seed), model_data=_model_data)
            self._parser = vw.TextFormatParser(self._ws)
        except Exception as exc:  # VW raises plain RuntimeError/ValueError on bad args
            raise PolicyError(f"cannot create the Vowpal Wabbit workspace: {exc}") from exc
        # vowpal_wabbit_next's Workspace.predict_one re-checks every example's label type
        # on every call through pybind11 enum comparisons: callgrind counts 128k of its
        # 200k instructions for a shared line and 11 actions there, the prediction itself
        # 72k. Every example here comes from this workspace's own parser, so the check
        # cannot fail: predict through the core workspace when the binding exposes it
        # (0.7.0, pinned), else through the public method.
        core = getattr(self._ws, "_workspace", None)
        self._predict_core: Callable[[list[Any]], Any] | None = getattr(
            core, "predict_multi_ex_one", None
        )

    # -- properties ------------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def n_learned(self) -> int:
        return self._state.n_learned

    @property
    def version(self) -> str:
        return self._state.version

    @property
    def parent_version(self) -> str | None:
        return self._state.parent

    @property
    def estimates(self) -> Estimates:
        return self._estimates

    @property
    def kinds(self) -> KindStats:
        return self._kinds

    @property
    def clusters(self) -> ClusterTree | None:
        """The tree of prompt embeddings saved with this policy (None: none yet)."""
        return self._clusters

    def set_clusters(self, tree: ClusterTree | None) -> None:
        with self._lock:
            self._clusters = tree

    def cluster_path(self, embedding: npt.ArrayLike) -> tuple[int, ...]:
        """The clusters of an embedding, coarse to fine (``()`` without a tree)."""
        with self._lock:  # a checkpoint may be saving the tree in another thread
            return () if self._clusters is None else self._clusters.predict_one(embedding)

    def learn_clusters(self, embedding: npt.ArrayLike) -> None:
        """Grow the tree with an embedding (nothing without a tree)."""
        with self._lock:
            if self._clusters is not None:
                self._clusters.learn_one(embedding)

    @property
    def feature_version(self) -> str:
        return FEATURE_VERSION

    def set_version(self, version: str, *, parent: str | None = None) -> None:
        """Name this policy (e.g. after an MLflow model version); decisions carry it."""
        with self._lock:
            self._state.parent = parent if parent is not None else self._state.version
            self._state.version = version

    def set_catalog(self, catalog: Catalog) -> None:
        """Swap the catalog; learned weights are kept, new models are scored by features."""
        with self._lock:
            self._catalog = catalog

    # -- deciding --------------------------------------------------------------------
    def actions_for(
        self,
        context: Context,
        *,
        weights: RewardWeights | None = None,
        allow: Collection[str] | None = None,
    ) -> tuple[Action, ...]:
        """The eligible actions for a context, with their features and estimates.

        ``weights`` is accepted for symmetry with :meth:`decide`; the actions themselves
        do not depend on it.
        """
        del weights
        catalog = self._catalog
        built_for, text = self._action_text
        if built_for is not catalog:
            gens = self._generations
            text = {spec.name: action_features(spec, generation=gens.get(spec.name, 0))
                    for spec in catalog}
            self._action_text = (catalog, text)
        estimates = self._estimates
        input_tokens, max_tokens = context.input_tokens, context.max_tokens
        prompt = describe(input_tokens, context.dense.get(SKETCH_NAMESPACE))
        specs = eligible_models(catalog, context, allow=allow)
        return tuple(
            Action(spec.name, text[spec.name],
                   estimates.cost_usd(spec, input_tokens=input_tokens, max_tokens=max_tokens,
                                      fit=fit),
                   estimates.latency_ms(spec))
            for spec, fit in zip(specs, estimates.fitted(specs, prompt), strict=True)
        )

    def _examples(self, context: Context, actions: tuple[Action, ...],
                  label: tuple[int, float, float] | None = None) -> list[Any]:
        parse = self._parser.parse_line
        examples = [parse(shared_line(context, namespaces=self._shared_namespaces))]
        for i, a in enumerate(actions):
            if label is not None:
                text = (labelled(a.features, cost=label[1], probability=label[2])
                        if i == label[0] else a.features)
                examples.append(parse(text))
            else:
                # Unlabelled action examples come back from VW's predict unchanged, so
                # each model's is parsed once and reused (a quarter of a decision's time).
                cached = self._action_cache.get(a.features)
                if cached is None:
                    if len(self._action_cache) > 4096:
                        self._action_cache.clear()
                    cached = self._action_cache[a.features] = parse(a.features)
                examples.append(cached)
        return examples

    def predict_quality(self, context: Context, actions: tuple[Action, ...]) -> list[float]:
        """The policy's expected quality of each action, in the order of ``actions``.

        VW's prediction, updated by the grades pooled for the prompt's kind
        (:mod:`bandit.kinds`) when ``kind_pooling`` is on.
        """
        with self._lock:  # the kinds' table changes under a learner in another thread
            return self._beliefs(context, actions).means

    def _beliefs(self, context: Context, actions: tuple[Action, ...]) -> _Beliefs:
        """The posterior of each action's quality, and the prompt's kind."""
        n0 = self.config.prior_strength
        if not self.config.kind_pooling:
            prior = self.predict_vw_quality(context, actions)
            return _Beliefs(prior, [n0] * len(prior), 0.0, None)
        path = self._kinds.pooled_path(kind_path(context),
                                       min_grades=self.config.min_kind_grades)
        kind = path[0] if path else None
        models = [a.model for a in actions]
        ns, sums, total = self._kinds.counts(kind, models)
        if total >= self.config.min_kind_grades:
            # Established: the kind's mean prediction, the same for every prompt of it,
            # so VW is asked only about a model the kind has no prediction for yet.
            kind_means = self._kinds.prior_means(kind, models)
            if any(m is None for m in kind_means):
                per_prompt = self.predict_vw_quality(context, actions)
                prior = [q if m is None else m
                         for q, m in zip(per_prompt, kind_means, strict=True)]
            else:
                prior = cast("list[float]", kind_means)
        else:
            prior = self.predict_vw_quality(context, actions)
        means = [(n0 * q + s) / (n0 + n) for q, n, s in zip(prior, ns, sums, strict=True)]
        # Finer clusters of meaning: each one's prior is the posterior of the cluster
        # above it, and its grades count only where they disagree with the rest of that
        # cluster's (bandit.kinds.refine).
        strengths = [n0 + n for n in ns]
        for finer in path[1:]:
            parent = (ns, sums)
            ns, sums, _ = self._kinds.counts(finer, models)
            means, strengths = refine(means, strengths, parent, (ns, sums),
                                      prior_strength=n0)
        return _Beliefs(means, strengths, total, path[-1] if path else None)

    def predict_vw_quality(self, context: Context, actions: tuple[Action, ...]) -> list[float]:
        """VW's predicted quality of each action, in the order of ``actions``."""
        with self._lock:
            try:
                examples = self._examples(context, actions)
                if self._predict_core is not None:
                    pred = self._predict_core([ex._example for ex in examples])
                else:
                    pred = self._ws.predict_one(examples)
            except Exception as exc:
                self._action_cache.clear()  # never reuse examples VW may have left half-done
                raise PolicyError(f"Vowpal Wabbit failed to predict: {exc}") from exc
        # cb_adf predicts action scores: (action index, predicted cost) pairs.
        scored = cast("list[tuple[int, float]]", pred)
        quality = [0.0] * len(actions)
        for idx, cost in scored:
            # Quality lives in [0, 1]; a regression overshooting it must not buy a model
            # more traffic than a perfect score would.
            quality[idx] = min(1.0, max(0.0, -float(cost)))
        return quality

    def combined_scores(
        self,
        context: Context,
        actions: tuple[Action, ...],
        *,
        weights: RewardWeights | None = None,
    ) -> list[float]:
        """Expected reward of each action: ``w_q * predicted quality - known penalty``."""
        return _combine(self.predict_quality(context, actions), actions,
                        weights or self.weights)

    def scores(
        self,
        context: Context,
        actions: tuple[Action, ...],
        *,
        weights: RewardWeights | None = None,
    ) -> list[float]:
        """This policy's probability for each action (its pmf), in the order of ``actions``.

        Thompson sampling's pmf is estimated from draws of a generator seeded with the
        policy's seed, so the same policy gives the same answer every time.
        """
        w = weights or self.weights
        with self._lock:
            beliefs = self._beliefs(context, actions)
            return self._pmf(beliefs, actions, w, np.random.default_rng(self.seed))

    def _pmf(self, beliefs: _Beliefs, actions: tuple[Action, ...], weights: RewardWeights,
             rng: np.random.Generator, *, pooled: bool = False) -> list[float]:
        """The exploration pmf. Thompson sampling on an established kind draws from the
        posterior: fresh draws, or with ``pooled`` the kind's :class:`ThompsonPool`."""
        config = self.config
        if config.exploration == "thompson" and beliefs.grades >= config.min_kind_grades:
            penalties = _penalties(actions, weights)
            if not pooled:
                return thompson(beliefs.means, beliefs.strengths, penalties,
                                quality_weight=weights.quality,
                                draws=config.thompson_draws, rng=rng)
            key = (beliefs.kind, tuple(a.model for a in actions))
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = ThompsonPool(config.thompson_draws)
                if len(self._pools) > MAX_POOLS:
                    self._pools.popitem(last=False)
            else:
                self._pools.move_to_end(key)
            return pool.pmf(beliefs.means, beliefs.strengths, penalties,
                            quality_weight=weights.quality, rng=rng)
        return config.explore(_combine(beliefs.means, actions, weights),
                              n_learned=self._state.n_learned)

    def decide(
        self,
        context: Context,
        *,
        weights: RewardWeights | None = None,
        allow: Collection[str] | None = None,
        explore: bool = True,
    ) -> Decision:
        """Choose a model for ``context``.

        With ``explore`` the model is sampled from the exploration pmf with the policy's
        own seeded generator and the decision logs that probability; without it the best
        scoring model is taken with probability 1 (for evaluation, never for logged
        traffic).
        """
        w = weights or self.weights
        with self._lock:
            actions = self.actions_for(context, allow=allow)
            beliefs = self._beliefs(context, actions)
            quality = beliefs.means
            if explore:
                probs = self._pmf(beliefs, actions, w, self._draw_rng, pooled=True)
                u = self._rng.random()
                index, acc = len(probs) - 1, 0.0
                for i, p in enumerate(probs):
                    acc += p
                    if u < acc and p > 0:
                        index = i
                        break
                if probs[index] <= 0:  # float round-off at the very top of the range
                    index = max(range(len(probs)), key=lambda i: probs[i])
            else:
                probs = greedy(_combine(quality, actions, w))
                index = probs.index(1.0)
            version = self._state.version
        return Decision(
            model=actions[index].model,
            index=index,
            probability=probs[index],
            pmf=tuple((a.model, p) for a, p in zip(actions, probs, strict=True)),
            policy_version=version,
            feature_version=context.feature_version,
            weights=w,
            context=context,
            actions=actions,
            explored=explore,
            predicted_quality=tuple(quality),
            extra={} if beliefs.kind is None else {"kind": beliefs.kind},
        )

    # -- learning --------------------------------------------------------------------
    def learn(
        self,
        decision: Decision,
        reward: float,
        *,
        outcome: Mapping[str, float | None] | None = None,
        revisit: bool = False,
    ) -> None:
        """Learn from the reward of the model ``decision`` chose (and only that model).

        VW learns that model's quality: ``outcome["quality"]`` when given, else what the
        reward implies once the expected penalty the decision was made with is added
        back. ``outcome`` may also carry the call's measured ``input_tokens``,
        ``output_tokens``, ``cost_usd`` and ``latency_ms``; they refine the estimates.
        The grade is also counted for the prompt's kind (:mod:`bandit.kinds`), except
        with ``revisit``: a further pass over a decision already learned, which VW may
        learn again but which must not count twice as evidence.
        """
        if not math.isfinite(reward):
            raise PolicyError(f"reward: must be finite, got {reward!r}")
        if not 0.0 < decision.probability <= 1.0:
            raise PolicyError(f"probability: must be in (0, 1], got {decision.probability!r}")
        outcome = outcome or {}
        chosen = decision.actions[decision.index]
        w = decision.weights
        quality = outcome.get("quality")
        if quality is None:
            if w.quality <= 0:
                quality = None  # the reward says nothing about quality
            else:
                expected = penalty(w, cost_usd=chosen.expected_cost_usd,
                                   latency_ms=chosen.expected_latency_ms)
                quality = (reward + expected) / w.quality
        with self._lock:
            if quality is not None:
                examples = self._examples(
                    decision.context,
                    decision.actions,
                    label=(decision.index, -float(quality),
                           max(decision.probability, 1.0 / self.config.max_importance_weight)),
                )
                try:
                    self._ws.learn_one(examples)
                except Exception as exc:
                    raise PolicyError(f"Vowpal Wabbit failed to learn: {exc}") from exc
                path = (kind_path(decision.context)
                        if self.config.kind_pooling and not revisit else ())
                if path:
                    grade = min(1.0, max(0.0, quality))
                    changed = self._watch(decision.model, path, grade)
                    predictions = dict(zip(
                        (a.model for a in decision.actions),
                        self.predict_vw_quality(decision.context, decision.actions),
                        strict=True))
                    for kind in path:
                        self._kinds.observe(kind, decision.model, grade)
                        self._kinds.observe_prior(kind, predictions)
                    if changed is not None:
                        # After the grade is counted: the grades that told of the change
                        # are forgotten with the rest.
                        self._reset(decision.model, source="detected", direction=changed)
            if any(outcome.get(k) is not None
                   for k in ("output_tokens", "cost_usd", "latency_ms")):
                self._estimates.observe(
                    decision.model,
                    input_tokens=outcome.get("input_tokens") or decision.context.input_tokens,
                    output_tokens=outcome.get("output_tokens"),
                    cost_usd=outcome.get("cost_usd"),
                    latency_ms=outcome.get("latency_ms"),
                    sketch=decision.context.dense.get(SKETCH_NAMESPACE),
                )
            self._state.n_learned += 1

    # -- adapting to change -----------------------------------------------------------
    def _watch(self, model: str, path: tuple[str, ...], grade: float) -> str | None:
        """Feed the change detector one grade's surprise against the model's mean on the
        finest kind where it has enough grades; the direction of a detected change."""
        if not self.config.detect_changes:
            return None
        baseline = self._kinds.baseline(path, model, MIN_BASELINE_GRADES)
        if baseline is None:
            return None
        return self._detector.observe(model, grade - baseline)

    def _reset(self, model: str, *, source: str, direction: str) -> ChangeEvent:
        self._kinds.forget_model(model)
        self._detector.reset(model)
        self._generations[model] = self._generations.get(model, 0) + 1
        self._action_text = (None, {})  # the model's identity feature changed
        self._pools.clear()
        seq = (self._changes[-1].seq if self._changes else 0) + 1
        event = ChangeEvent(seq=seq, model=model, at=self._state.n_learned, source=source,
                            direction=direction)
        self._changes.append(event)
        del self._changes[:-MAX_CHANGE_EVENTS]
        self._change_counts[model] = self._change_counts.get(model, 0) + 1
        return event

    def reset_model(self, model: str, *, estimates: bool = True) -> ChangeEvent:
        """Declare ``model`` changed: forget what was learned of its quality (its grades on
        every kind, and VW's weights for it, by giving it a new identity) and, with
        ``estimates``, its measured cost, latency and answer length; every other model's
        evidence stays. It is explored again as a model with a short history would be.

        >>> from bandit.catalog import Catalog
        >>> policy = Policy(Catalog.from_dict({"models": [{"name": "a"}, {"name": "b"}]}))
        >>> policy.reset_model("a").to_dict()
        {'seq': 1, 'model': 'a', 'at': 0, 'source': 'operator', 'direction': 'reset'}
        """
        with self._lock:
            if model not in self._catalog.names:
                raise PolicyError(f"model: {model!r} is not in the catalog "
                                  f"(models: {', '.join(self._catalog.names)})")
            if estimates:
                self._estimates.forget(model)
            return self._reset(model, source="operator", direction="reset")

    @property
    def changes(self) -> tuple[ChangeEvent, ...]:
        """The newest change events (at most :data:`MAX_CHANGE_EVENTS`), oldest first."""
        with self._lock:
            return tuple(self._changes)

    @property
    def change_seq(self) -> int:
        """The number of the newest change event (0: none yet)."""
        with self._lock:
            return self._changes[-1].seq if self._changes else 0

    def changes_detected(self) -> dict[str, int]:
        """Changes per model since this policy began (detected and declared)."""
        with self._lock:
            return dict(self._change_counts)

    def change_statistic(self, model: str) -> float:
        """The change detector's sum for ``model`` (it detects a change above
        ``config.change_threshold``)."""
        with self._lock:
            return self._detector.statistic(model)

    # -- persistence -----------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        with self._lock:
            state = self._rng.getstate()
            meta: dict[str, Any] = {
                "format": 1,
                "config": self.config.to_dict(),
                "vw_args": self.config.vw_args(seed=self.seed),
                "seed": self.seed,
                "weights": self.weights.to_dict(),
                "feature_version": FEATURE_VERSION,
                "catalog": self._catalog.to_dict(),
                "catalog_digest": self._catalog.digest(),
                "estimates": self._estimates.to_dict(),
                "kinds": self._kinds.to_dict(),
                "drift": {"detector": self._detector.to_dict(),
                          "generations": dict(self._generations),
                          "events": [e.to_dict() for e in self._changes],
                          "counts": dict(self._change_counts)},
                "draw_rng_state": self._draw_rng.bit_generator.state,
                "n_learned": self._state.n_learned,
                "version": self._state.version,
                "parent": self._state.parent,
                "extra": self._state.extra,
                "rng_state": [state[0], list(state[1]), state[2]],
            }
            if self._clusters is not None:  # absent: older readers see the same header
                # Without the leaves' gathered embeddings: a checkpoint or an MLflow
                # version holds no single prompt's embedding (docs/service.md).
                meta["clusters"] = self._clusters.to_dict(waiting=False)
            return meta

    def to_bytes(self) -> bytes:
        """The policy with its metadata: VW model, config, catalog, estimates, RNG state."""
        with self._lock:
            # The draw pools are not saved: the saved policy and this one both start
            # them afresh from the same generator state, and so decide alike.
            self._pools.clear()
            header = json.dumps(self.metadata(), sort_keys=True).encode()
            return _MAGIC + struct.pack("<Q", len(header)) + header + self._ws.serialize()

    @staticmethod
    def read_metadata(blob: bytes) -> dict[str, Any]:
        """The metadata of a saved policy, without loading VW."""
        if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 8:
            raise PolicyError("not a routebandit policy (bad magic header)")
        (n,) = struct.unpack_from("<Q", blob, len(_MAGIC))
        start = len(_MAGIC) + 8
        try:
            meta: dict[str, Any] = json.loads(blob[start : start + n])
        except ValueError as exc:
            raise PolicyError(f"corrupt policy metadata: {exc}") from exc
        return meta

    @classmethod
    def from_bytes(cls, blob: bytes) -> Policy:
        """Load a policy saved by :meth:`to_bytes`; it decides exactly as the original."""
        meta = cls.read_metadata(blob)
        if meta.get("feature_version") != FEATURE_VERSION:
            raise PolicyError(
                f"policy was trained on features {meta.get('feature_version')!r} but this "
                f"routebandit computes {FEATURE_VERSION!r}; retrain it with `routebandit train`"
            )
        (n,) = struct.unpack_from("<Q", blob, len(_MAGIC))
        model = blob[len(_MAGIC) + 8 + n :]
        policy = cls(
            Catalog.from_dict(meta["catalog"]),
            config=PolicyConfig.from_dict(meta["config"]),
            weights=RewardWeights.from_dict(meta["weights"]),
            seed=int(meta["seed"]),
            _model_data=model,
        )
        policy._estimates = Estimates.from_dict(meta["estimates"])
        # Policies saved before kind pooling existed have no kinds: they start empty.
        policy._kinds = KindStats.from_dict(meta.get("kinds", {}))
        # How long evidence lasts is the configuration's, whatever the saved tables say.
        policy._estimates.memory = float(policy.config.estimate_memory)
        policy._kinds.memory = float(policy.config.kind_memory)
        drift = meta.get("drift") or {}
        policy._detector = ChangeDetector.from_dict(
            drift.get("detector", {}), threshold=policy.config.change_threshold,
            drift=policy.config.change_drift)
        policy._generations = {str(m): int(g) for m, g in drift.get("generations", {}).items()}
        policy._changes = [ChangeEvent.from_dict(e) for e in drift.get("events", [])]
        policy._change_counts = {str(m): int(n) for m, n in drift.get("counts", {}).items()}
        # Policies saved before clusters of meaning have no tree: the service grows one.
        if meta.get("clusters"):
            policy._clusters = ClusterTree.from_dict(meta["clusters"])
        if "draw_rng_state" in meta:
            policy._draw_rng.bit_generator.state = meta["draw_rng_state"]
        policy._state = _State(
            n_learned=int(meta["n_learned"]),
            version=str(meta["version"]),
            parent=meta.get("parent"),
            extra=dict(meta.get("extra", {})),
        )
        v, internal, gauss = meta["rng_state"]
        policy._rng.setstate((v, tuple(internal), gauss))
        return policy

    def clone(self) -> Policy:
        """An independent copy (same weights, estimates and RNG state)."""
        return Policy.from_bytes(self.to_bytes())
