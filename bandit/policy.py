"""The contextual-bandit policy: Vowpal Wabbit ``cb_explore_adf`` over the catalog.

Every model is an action described by features (identity, provider, log price, context
window, capabilities, and its expected cost and latency penalties under the request's
reward weights), so a model added to the catalog later is scored from its features on
its first request and explored. Hard constraints filter the catalog before scoring.
"""

from __future__ import annotations

import json
import math
import random
import struct
import threading
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import vowpal_wabbit_next as vw

from bandit.catalog import Catalog
from bandit.constraints import eligible_models
from bandit.decision import Action, Decision
from bandit.errors import PolicyError
from bandit.estimates import Estimates
from bandit.features import FEATURE_VERSION, Context
from bandit.reward import RewardWeights, penalty
from bandit.vwformat import action_features, labelled, shared_line

EXPLORATIONS = ("squarecb", "epsilon", "bag", "cover", "softmax")
_MAGIC = b"RBPOLICY1\n"


@dataclass(frozen=True)
class PolicyConfig:
    """How the policy explores and learns (all turned into VW arguments).

    >>> PolicyConfig(exploration="epsilon", epsilon=0.1).vw_args(seed=7)[:4]
    ['--cb_explore_adf', '--cb_type', 'mtr', '--epsilon']
    """

    exploration: str = "squarecb"
    epsilon: float = 0.05
    gamma_scale: float = 10.0
    gamma_exponent: float = 0.5
    bag_size: int = 5
    cover_size: int = 3
    softmax_lambda: float = 10.0
    cb_type: str = "mtr"
    learning_rate: float = 0.5
    power_t: float = 0.5
    l2: float = 0.0
    bits: int = 20
    interactions: tuple[str, ...] = ("ua", "qa", "sa", "ta", "na")
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
        for name in ("gamma_scale", "learning_rate", "softmax_lambda"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise PolicyError(f"{name}: must be a positive number, got {value!r}")

    def vw_args(self, *, seed: int) -> list[str]:
        args = ["--cb_explore_adf", "--cb_type", self.cb_type]
        if self.exploration == "squarecb":
            args += ["--squarecb", "--gamma_scale", f"{self.gamma_scale:g}",
                     "--gamma_exponent", f"{self.gamma_exponent:g}"]
        elif self.exploration == "epsilon":
            args += ["--epsilon", f"{self.epsilon:g}"]
        elif self.exploration == "bag":
            args += ["--bag", str(self.bag_size), "--epsilon", f"{self.epsilon:g}"]
        elif self.exploration == "cover":
            args += ["--cover", str(self.cover_size), "--epsilon", f"{self.epsilon:g}"]
        elif self.exploration == "softmax":
            args += ["--softmax", "--lambda", f"{self.softmax_lambda:g}"]
        for pair in self.interactions:
            args += ["-q", pair]
        args += ["-l", f"{self.learning_rate:g}", "--power_t", f"{self.power_t:g}",
                 "-b", str(self.bits), "--random_seed", str(seed), "--quiet"]
        if self.l2:
            args += ["--l2", f"{self.l2:g}"]
        return args + list(self.extra_args)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["interactions"] = list(self.interactions)
        out["extra_args"] = list(self.extra_args)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PolicyConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise PolicyError(f"policy config: unknown field {unknown[0]!r}")
        values = dict(raw)
        for name in ("interactions", "extra_args"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


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
        self._estimates = Estimates()
        self._state = _State()
        self._rng = random.Random(self.seed)
        self._lock = threading.RLock()
        try:
            self._ws = vw.Workspace(self.config.vw_args(seed=self.seed), model_data=_model_data)
            self._parser = vw.TextFormatParser(self._ws)
        except Exception as exc:  # VW raises plain RuntimeError/ValueError on bad args
            raise PolicyError(f"cannot create the Vowpal Wabbit workspace: {exc}") from exc

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
        """The eligible actions for a context, with their features and estimates."""
        w = weights or self.weights
        out = []
        for spec in eligible_models(self._catalog, context, allow=allow):
            cost = self._estimates.cost_usd(
                spec, input_tokens=context.input_tokens, max_tokens=context.max_tokens
            )
            latency = self._estimates.latency_ms(spec)
            feats = action_features(
                spec,
                cost_penalty=penalty(replace(w, latency=0.0), cost_usd=cost, latency_ms=0.0),
                latency_penalty=w.latency * latency / 1000.0,
            )
            out.append(Action(spec.name, feats, cost, latency))
        return tuple(out)

    def _examples(self, context: Context, actions: tuple[Action, ...],
                  label: tuple[int, float, float] | None = None) -> list[Any]:
        lines = [shared_line(context)]
        for i, a in enumerate(actions):
            if label is not None and i == label[0]:
                lines.append(labelled(a.features, cost=label[1], probability=label[2]))
            else:
                lines.append(a.features)
        return [self._parser.parse_line(line) for line in lines]

    def scores(self, context: Context, actions: tuple[Action, ...]) -> list[float]:
        """VW's probability for each action, in the order of ``actions``."""
        with self._lock:
            try:
                pred = self._ws.predict_one(self._examples(context, actions))
            except Exception as exc:
                raise PolicyError(f"Vowpal Wabbit failed to predict: {exc}") from exc
        probs = [0.0] * len(actions)
        for idx, p in pred:
            probs[idx] = float(p)
        total = sum(probs)
        return [p / total for p in probs] if total > 0 else [1.0 / len(actions)] * len(actions)

    def decide(
        self,
        context: Context,
        *,
        weights: RewardWeights | None = None,
        allow: Collection[str] | None = None,
        explore: bool = True,
    ) -> Decision:
        """Choose a model for ``context``.

        With ``explore`` the model is sampled from VW's pmf with the policy's own seeded
        generator and the decision logs that probability; without it the most probable
        model is taken with probability 1 (for evaluation, never for logged traffic).
        """
        w = weights or self.weights
        with self._lock:
            actions = self.actions_for(context, weights=w, allow=allow)
            probs = self.scores(context, actions)
            if explore:
                u = self._rng.random()
                index, acc = len(probs) - 1, 0.0
                for i, p in enumerate(probs):
                    acc += p
                    if u < acc:
                        index = i
                        break
                probability = probs[index]
            else:
                index = max(range(len(probs)), key=lambda i: (probs[i], -i))
                probs = [1.0 if i == index else 0.0 for i in range(len(probs))]
                probability = 1.0
            version = self._state.version
        return Decision(
            model=actions[index].model,
            index=index,
            probability=probability,
            pmf=tuple((a.model, p) for a, p in zip(actions, probs)),
            policy_version=version,
            feature_version=context.feature_version,
            weights=w,
            context=context,
            actions=actions,
            explored=explore,
        )

    # -- learning --------------------------------------------------------------------
    def learn(
        self,
        decision: Decision,
        reward: float,
        *,
        outcome: Mapping[str, float | None] | None = None,
    ) -> None:
        """Learn from the reward of the model ``decision`` chose (and only that model).

        ``outcome`` may carry the call's measured ``input_tokens``, ``output_tokens``,
        ``cost_usd`` and ``latency_ms``; they refine the cost and latency estimates.
        """
        if not math.isfinite(reward):
            raise PolicyError(f"reward: must be finite, got {reward!r}")
        if not 0.0 < decision.probability <= 1.0:
            raise PolicyError(f"probability: must be in (0, 1], got {decision.probability!r}")
        with self._lock:
            examples = self._examples(
                decision.context,
                decision.actions,
                label=(decision.index, -float(reward), decision.probability),
            )
            try:
                self._ws.learn_one(examples)
            except Exception as exc:
                raise PolicyError(f"Vowpal Wabbit failed to learn: {exc}") from exc
            if outcome:
                self._estimates.observe(
                    decision.model,
                    input_tokens=outcome.get("input_tokens") or decision.context.input_tokens,
                    output_tokens=outcome.get("output_tokens"),
                    cost_usd=outcome.get("cost_usd"),
                    latency_ms=outcome.get("latency_ms"),
                )
            self._state.n_learned += 1

    # -- persistence -----------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        with self._lock:
            state = self._rng.getstate()
            return {
                "format": 1,
                "config": self.config.to_dict(),
                "vw_args": self.config.vw_args(seed=self.seed),
                "seed": self.seed,
                "weights": self.weights.to_dict(),
                "feature_version": FEATURE_VERSION,
                "catalog": self._catalog.to_dict(),
                "catalog_digest": self._catalog.digest(),
                "estimates": self._estimates.to_dict(),
                "n_learned": self._state.n_learned,
                "version": self._state.version,
                "parent": self._state.parent,
                "extra": self._state.extra,
                "rng_state": [state[0], list(state[1]), state[2]],
            }

    def to_bytes(self) -> bytes:
        """The policy with its metadata: VW model, config, catalog, estimates, RNG state."""
        with self._lock:
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
