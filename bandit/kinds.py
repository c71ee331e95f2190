"""Quality pooled per kind of prompt, on top of the regression's per-prompt prediction.

Most LLM traffic is templated: an application sends the same instructions, the same
few-shot examples or the same system prompt with a different question each time, and a
model that is good at one prompt of a template is usually good at the rest. A bandit
sees one grade in K per prompt; Vowpal Wabbit's online regression spreads each grade
over hundreds of crossed weights and, in a few thousand rounds, stays short of the plain
mean grade of each model on each template (docs/replay.md). This module keeps that mean.

A prompt's *kind* (:func:`kind_of`) is the caller's task tag when the request carries
one, else its template: the opening words of the last user turn, with the opening words
of the system prompt (the ``head=`` and ``shead=`` tags of :mod:`bandit.features`).
One-off prompts get kinds that never gather data and change nothing.

The policy's belief about a model's quality on a prompt is a Beta posterior: a prior
mean ``m``, worth ``prior_strength`` grades, updated by the kind's ``n`` observed grades
with sum ``s``::

    mean = (prior_strength * m + s) / (prior_strength + n)

Until a kind has ``min_kind_grades`` grades, ``m`` is the regression's prediction for
the prompt at hand. From then on the kind is *established* and ``m`` is the mean of the
regression's predictions for this model over the kind's prompts learned so far: the
belief, and so the choice, no longer depends on the prompt within the kind. That is what
keeps the kind's means honest. If the choice followed the regression's per-prompt
guesses, a model would be tried on the prompts where the others look weak, which tend
to be the hard ones, and its mean would come out too low: in a RouterBench replay gpt-4
scored 0.73 on the winogrande prompts it was sent and 0.86 on all of them.

Free-form traffic has no templates; its *clusters of meaning* (:mod:`bandit.clusters`,
put in a context by :func:`bandit.clusters.with_clusters`) stand in for them. A prompt's
:func:`kind_path` lists its kinds coarse to fine: its clusters, then its template. Its
grades are counted in every one of them. A decision pools along the path: the coarsest
kind as above, then each finer kind with the posterior so far as its prior, its own
grades counting only where they disagree with the rest of its parent's more than chance
allows (:func:`refine`). Once the template has ``min_kind_grades`` grades, it alone is
pooled, exactly as without clusters (:meth:`KindStats.pooled_path`).

Only the grade of the model that was chosen is ever counted.

Evidence ages (``memory``): once a model has ``memory`` grades on a kind, each new grade
weighs as much as before and the old ones fade in proportion (their counts are scaled
so the total stays at ``memory``): an exponential forgetting with a half-life of about
``0.69 * memory`` of that model's grades there, so a kind's mean follows a model that
drifts at a bounded rate however long its history. A change that is abrupt is caught
sooner by :mod:`bandit.drift`, which has :meth:`KindStats.forget_model` drop what the
kinds knew of a model.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from bandit.drift import fade
from bandit.features import Context

#: Kinds remembered at most; the least recently updated kind is forgotten first. A kind
#: is remembered from its second grade on: one-off prompts (a different opening every
#: time) would otherwise fill the table, and the checkpoints with it.
MAX_KINDS = 2_000
#: Kinds seen once, remembered (as 8-byte digests) until they are seen again.
MAX_SEEN_ONCE = 8_000
_KIND_TAGS = ("shead=", "head=")
#: How far (a normal score) a finer kind's grades must stray from the rest of its
#: parent's before they count (:func:`refine`): 2.33 is a one-sided 1 % test.
DISAGREE_Z = 2.33
#: The namespace of a context that holds its clusters of meaning, coarse to fine
#: (:func:`bandit.clusters.with_clusters`), and how each of them begins.
CLUSTER_NAMESPACE = "k"
CLUSTER_TAG = "cluster="


def kind_of(context: Context) -> str | None:
    """The kind of a prompt: its task tag if it has one, else its template.

    >>> from bandit.features import featurize, parse_request
    >>> kind_of(featurize(parse_request(prompt="Translate to French: cheese")))
    'head=translate_to_french_cheese'
    >>> kind_of(featurize(parse_request(prompt="hi", metadata={"task": "qa"})))
    'task=qa'
    """
    tags = context.namespaces.get("t", ())
    parts = []
    for tag in tags:
        if tag.startswith("task="):
            return tag
        if tag.startswith(_KIND_TAGS) and not tag.endswith("="):
            parts.append(tag)
    return "|".join(sorted(parts)) or None


#: Where a decision's kind came from (:func:`kind_source`).
KIND_SOURCES = ("tag", "template", "cluster", "none")


def kind_source(kind: str | None) -> str:
    """Where a kind came from: the caller's task ``tag``, the prompt's ``template``, a
    ``cluster`` of meaning, or ``none``.

    >>> kind_source("task=qa"), kind_source("cluster=7"), kind_source(None)
    ('tag', 'cluster', 'none')
    """
    if not kind:
        return "none"
    if kind.startswith("task="):
        return "tag"
    if kind.startswith(CLUSTER_TAG):
        return "cluster"
    return "template"


def kind_path(context: Context) -> tuple[str, ...]:
    """The kinds a prompt's grades are counted in, coarse to fine.

    Its task tag alone if it has one; else its clusters of meaning (if any), then its
    template (if any).

    >>> from bandit.features import featurize, parse_request
    >>> from bandit.clusters import with_clusters
    >>> ctx = featurize(parse_request(prompt="Translate to French: cheese"))
    >>> kind_path(with_clusters(ctx, (2, 5)))
    ('cluster=2', 'cluster=5', 'head=translate_to_french_cheese')
    >>> kind_path(featurize(parse_request(prompt="hi", metadata={"task": "qa"})))
    ('task=qa',)
    """
    kind = kind_of(context)
    if kind is not None and kind.startswith("task="):
        return (kind,)
    clusters = tuple(context.namespaces.get(CLUSTER_NAMESPACE, ()))
    return clusters + ((kind,) if kind is not None else ())


def _chi2_quantile(dof: int, z: float) -> float:
    """The chi-square quantile with ``dof`` degrees of freedom at a normal score ``z``
    (Wilson-Hilferty)."""
    h = 2.0 / (9.0 * dof)
    return float(dof * (1.0 - h + z * math.sqrt(h)) ** 3)


def refine(means: Sequence[float], strengths: Sequence[float],
           parent: tuple[Sequence[float], Sequence[float]],
           child: tuple[Sequence[float], Sequence[float]], *, prior_strength: float,
           z: float = DISAGREE_Z) -> tuple[list[float], list[float]]:
    """A finer kind's posterior from its parent's: ``(means, strengths)`` per model.

    ``means`` and ``strengths`` are the parent's posterior; ``parent`` and ``child`` the
    ``(n, sum)`` of grades per model of the parent kind (the child's among them) and of
    the child. The child's grades are compared with the rest of the parent's: unless they
    disagree more than chance allows (a chi-square test over the models at normal score
    ``z``), the child *is* its parent and its grades change nothing. If they do, the
    spread of the truth between them, ``tau2``, sets how much the parent's posterior is
    worth as the child's prior (empirical Bayes): ``q (1 - q) / tau2`` grades, never
    fewer than ``prior_strength`` nor more than the parent's own strength.

    >>> refine([0.5, 0.5], [40.0, 40.0], ([40, 40], [20, 20]), ([20, 20], [10, 10]),
    ...        prior_strength=8.0)
    ([0.5, 0.5], [40.0, 40.0])
    >>> means, _ = refine([0.5, 0.5], [40.0, 40.0], ([40, 40], [20, 20]),
    ...                   ([20, 20], [20, 20]), prior_strength=8.0)
    >>> [round(m, 2) for m in means]
    [0.86, 0.86]
    """
    n_p, s_p = parent
    n_c, s_c = child
    chi2, num, den, dof = 0.0, 0.0, 0.0, 0
    for np_, sp, nc, sc in zip(n_p, s_p, n_c, s_c, strict=True):
        n_rest = np_ - nc
        if nc <= 0 or n_rest <= 0:
            continue
        pooled = sp / np_
        var = pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / n_rest)
        if var <= 0:
            continue
        d2 = (sc / nc - (sp - sc) / n_rest) ** 2
        chi2 += d2 / var
        num += (d2 - var) / var
        den += 2.0 / var
        dof += 1
    tau2 = num / den if dof and chi2 > _chi2_quantile(dof, z) and num > 0 else 0.0
    if tau2 <= 0:
        return list(means), list(strengths)
    out_means, out_strengths = [], []
    for q, strength, n, s in zip(means, strengths, n_c, s_c, strict=True):
        n0 = min(strength, max(prior_strength, q * (1.0 - q) / tau2))
        out_means.append((n0 * q + s) / (n0 + n))
        out_strengths.append(min(strength, n0 + n))
    return out_means, out_strengths


class KindStats:
    """Per kind and model: the grades observed (count, sum), and the regression's mean
    prediction over the kind's prompts (the prior of an established kind).

    A kind's first grade only marks it as seen; it is counted from the second on.

    >>> stats = KindStats()
    >>> stats.observe("head=x", "a", 1.0)
    >>> stats.counts("head=x", ["a"])
    ([0.0], [0.0], 0.0)
    >>> stats.observe("head=x", "a", 1.0); stats.observe("head=x", "a", 0.0)
    >>> stats.counts("head=x", ["a", "b"])
    ([2.0, 0.0], [1.0, 0.0], 2.0)
    >>> stats.observe_prior("head=x", {"a": 0.6, "b": 0.2})
    >>> stats.prior_means("head=x", ["a", "b", "c"])
    [0.6, 0.2, None]
    """

    def __init__(self, max_kinds: int = MAX_KINDS, *, memory: float = 0.0) -> None:
        self.max_kinds = max_kinds
        # Grades per kind and model at most before the old ones fade (0: never).
        self.memory = float(memory)
        # kind -> model -> [n, sum of grades, n predictions, sum of predictions];
        # ordered by last update (LRU).
        self._table: OrderedDict[str, dict[str, list[float]]] = OrderedDict()
        self._totals: dict[str, float] = {}
        self._seen_once: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def _row(self, kind: str) -> dict[str, list[float]]:
        row = self._table.get(kind)
        if row is None:
            row = self._table[kind] = {}
            self._totals[kind] = 0.0
            if len(self._table) > self.max_kinds:
                old, _ = self._table.popitem(last=False)
                del self._totals[old]
        else:
            self._table.move_to_end(kind)
        return row

    def observe(self, kind: str, model: str, quality: float) -> None:
        """Count one grade of ``model`` on a prompt of ``kind`` (from the kind's second)."""
        if kind not in self._table:
            digest = int.from_bytes(hashlib.blake2b(kind.encode(), digest_size=8).digest(),
                                    "little")
            if digest not in self._seen_once:
                self._seen_once[digest] = None
                if len(self._seen_once) > MAX_SEEN_ONCE:
                    self._seen_once.popitem(last=False)
                return
            del self._seen_once[digest]
        cell = self._row(kind).setdefault(model, [0.0, 0.0, 0.0, 0.0])
        before = cell[0]
        # Old grades fade so that the count stays at ``memory``: the new one counts as
        # much as any grade ever did.
        keep = fade(before, self.memory)
        cell[0] *= keep
        cell[1] *= keep
        cell[0] += 1.0
        cell[1] += float(quality)
        self._totals[kind] += cell[0] - before

    def baseline(self, path: Sequence[str], model: str,
                 min_grades: float) -> float | None:
        """The mean grade of ``model`` on the finest kind of ``path`` where it has at
        least ``min_grades`` grades (None: nowhere yet).

        >>> stats = KindStats()
        >>> for q in (1.0, 1.0, 0.0):
        ...     stats.observe("head=x", "a", q)
        >>> stats.baseline(("cluster=1", "head=x"), "a", 2), stats.baseline(("head=x",), "a", 5)
        (0.5, None)
        """
        for kind in reversed(tuple(path)):
            row = self._table.get(kind)
            cell = row.get(model) if row is not None else None
            if cell is not None and cell[0] >= min_grades:
                return cell[1] / cell[0]
        return None

    def forget_model(self, model: str) -> None:
        """Drop every grade and prediction of ``model`` on every kind (the others' stay).

        >>> stats = KindStats()
        >>> for m in ("a", "a", "b", "b"):
        ...     stats.observe("head=x", m, 1.0)
        >>> stats.forget_model("a")
        >>> stats.counts("head=x", ["a", "b"])
        ([0.0, 2.0], [0.0, 2.0], 2.0)
        """
        for kind, row in self._table.items():
            cell = row.pop(model, None)
            if cell is not None:
                self._totals[kind] -= cell[0]

    def pooled_path(self, path: Sequence[str], *, min_grades: float) -> tuple[str, ...]:
        """The kinds a decision pools along, of a prompt's :func:`kind_path`: its template
        alone once that has ``min_grades`` grades (as without clusters), else its clusters.

        >>> stats = KindStats()
        >>> stats.pooled_path(("cluster=1", "cluster=4", "head=x"), min_grades=1)
        ('cluster=1', 'cluster=4')
        >>> for q in (1.0, 0.0):
        ...     stats.observe("head=x", "a", q)
        >>> stats.pooled_path(("cluster=1", "cluster=4", "head=x"), min_grades=1)
        ('head=x',)
        """
        path = tuple(path)
        if len(path) < 2 or path[-1].startswith(CLUSTER_TAG):
            return path
        if self.counts(path[-1], ())[2] >= min_grades:
            return path[-1:]
        return path[:-1]

    def observe_prior(self, kind: str, predictions: Mapping[str, float]) -> None:
        """Add the regression's predictions for one prompt of ``kind`` (if remembered)."""
        if kind not in self._table:
            return
        row = self._row(kind)
        memory = self.memory
        for model, q in predictions.items():
            cell = row.setdefault(model, [0.0, 0.0, 0.0, 0.0])
            keep = fade(cell[2], memory)
            cell[2] *= keep
            cell[3] *= keep
            cell[2] += 1.0
            cell[3] += float(q)

    def prior_means(self, kind: str | None, models: Sequence[str]) -> list[float | None]:
        """The regression's mean prediction per model over the kind (None: none yet)."""
        row = self._table.get(kind) if kind is not None else None
        out: list[float | None] = []
        for m in models:
            cell = row.get(m) if row is not None else None
            out.append(cell[3] / cell[2] if cell and cell[2] else None)
        return out

    def counts(self, kind: str | None,
               models: Sequence[str]) -> tuple[list[float], list[float], float]:
        """``(n per model, sum per model, n over all models)`` for ``kind``."""
        row = self._table.get(kind) if kind is not None else None
        if kind is None or row is None:
            return [0.0] * len(models), [0.0] * len(models), 0.0
        ns, sums = [], []
        for m in models:
            cell = row.get(m)
            ns.append(cell[0] if cell else 0.0)
            sums.append(cell[1] if cell else 0.0)
        return ns, sums, self._totals[kind]

    def to_dict(self) -> dict[str, Any]:
        return {"max_kinds": self.max_kinds, "memory": self.memory,
                "kinds": [[k, {m: list(c) for m, c in row.items()}]
                          for k, row in self._table.items()],
                "seen_once": list(self._seen_once)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> KindStats:
        out = cls(int(raw.get("max_kinds", MAX_KINDS)), memory=float(raw.get("memory", 0.0)))
        for kind, row in raw.get("kinds", []):
            out._table[str(kind)] = {str(m): [float(x) for x in c] for m, c in row.items()}
            out._totals[str(kind)] = sum(c[0] for c in row.values())
        out._seen_once = OrderedDict.fromkeys(int(d) for d in raw.get("seen_once", []))
        return out
