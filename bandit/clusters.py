"""Clusters of meaning: a streaming tree of prompt embeddings, for kinds of free-form traffic.

Templated traffic shows its kind in its opening words (:mod:`bandit.kinds`); free-form
traffic does not, but its embeddings do. :class:`ClusterTree` groups unit embeddings
online into a binary tree. It starts as one leaf, the root. A leaf keeps the first
``split_after`` embeddings that reach it; with that many it splits in two (spherical
2-means on them, the best of a few seeded k-means++ starts) and from then on sends each
embedding to the nearer of its two children. A prompt's :meth:`ClusterTree.predict_one`
is its path below the root, coarse to fine: ``(2, 6, 17)``.

No distance threshold sets the grain. The traffic decides where the tree grows (busy
regions split sooner and deeper), ``cap`` bounds it, and the grades decide how much each
level counts: the policy pools them along the path, each cluster's prior being its
parent's posterior, and a cluster's own grades count only where they disagree with the
rest of its parent's more than chance allows (:func:`bandit.kinds.refine`). So a fine
cluster changes nothing until it has shown that it differs.

Ids are stable: centres never move once made, a cluster keeps its id for ever and a
split adds two new ones below a leaf, so an old prompt only ever goes deeper and every
grade gathered under an id stays where it was. (The price: a topic that appears late is
first shared out among the old leaves nearest to it, and gets clusters of its own as
those leaves split.) Everything is deterministic for a seed and an order of prompts.

Memory: each cluster one centre, ``8 * dim`` bytes, and each leaf that may still split
up to ``split_after`` embeddings as float32, ``4 * dim * split_after`` bytes; at most
``cap`` clusters, of which ``(cap + 1) // 2`` leaves. With the defaults (``dim=256``,
``split_after=32``, ``cap=64``): 2 KiB per cluster, 32 KiB per waiting leaf, at most
1.1 MiB; once the cap is reached no leaf waits and the tree holds 128 KiB.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from bandit.errors import RequestError
from bandit.features import Context
from bandit.kinds import CLUSTER_NAMESPACE, CLUSTER_TAG

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Clusters at most (the root included); a split needs room for two more.
DEFAULT_CAP = 64
#: Embeddings a leaf gathers before it splits.
DEFAULT_SPLIT_AFTER = 32
_KMEANS_ROUNDS = 25
_STARTS = 8


def _unit(x: npt.ArrayLike, dim: int) -> FloatArray | None:
    try:
        v = np.asarray(x, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"embedding: must be {dim} numbers: {exc}") from exc
    if v.shape != (dim,):
        raise RequestError(f"embedding: expected {dim} numbers, got {v.size}")
    norm = float(np.linalg.norm(v))
    if not (np.isfinite(norm) and norm > 0.0):
        return None
    return v / norm


def _two_means(x: FloatArray, rng: np.random.Generator) -> tuple[FloatArray, IntArray]:
    """Spherical 2-means, the best of a few k-means++ starts: two unit centres and each
    row's side."""
    best: tuple[float, FloatArray, IntArray] | None = None
    for _ in range(_STARTS):
        first = x[rng.integers(len(x))]
        far = np.clip(1.0 - x @ first, 0.0, None)
        second = x[rng.choice(len(x), p=far / far.sum())] if far.sum() > 0 else first
        centres = np.stack([first, second])
        side = np.zeros(len(x), dtype=np.int64)
        for _ in range(_KMEANS_ROUNDS):
            new_side = np.asarray((x @ centres.T).argmax(axis=1), dtype=np.int64)
            sums = np.stack([x[new_side == j].sum(axis=0) for j in range(2)])
            norms = np.linalg.norm(sums, axis=1, keepdims=True)
            centres = np.where(norms > 0, sums / np.maximum(norms, 1e-300), centres)
            if np.array_equal(new_side, side):
                break
            side = new_side
        fit = float((x @ centres.T).max(axis=1).sum())
        if best is None or fit > best[0]:
            best = (fit, centres, side)
    assert best is not None
    return best[1], best[2]


def _encode(a: npt.NDArray[Any]) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _decode(s: str, dtype: type, shape: tuple[int, ...]) -> npt.NDArray[Any]:
    out: npt.NDArray[Any] = np.frombuffer(base64.b64decode(s), dtype=dtype).reshape(shape).copy()
    return out


class ClusterTree:
    """A streaming binary tree of clusters over unit embeddings.

    Parameters
    ----------
    dim
        Length of every embedding.
    cap
        Clusters at most, the root included (at least 3).
    split_after
        Embeddings a leaf gathers before it splits in two (at least 4).
    seed
        Seeds the 2-means starts; with the same seed and order the tree is the same.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> topic = np.arange(200) % 2  # two topics, alternating
    >>> blobs = np.eye(8)[topic] * 5 + rng.normal(size=(200, 8))
    >>> tree = ClusterTree(8, split_after=16)
    >>> for x in blobs:
    ...     tree.learn_one(x)
    >>> tree.predict_one(blobs[0])[0] != tree.predict_one(blobs[1])[0]
    True
    >>> ClusterTree.from_dict(tree.to_dict()).predict_one(blobs[0]) == tree.predict_one(blobs[0])
    True
    """

    def __init__(self, dim: int, *, cap: int = DEFAULT_CAP,
                 split_after: int = DEFAULT_SPLIT_AFTER, seed: int = 0) -> None:
        if dim < 1:
            raise RequestError(f"dim: must be at least 1, got {dim!r}")
        if cap < 3:
            raise RequestError(f"cap: must be at least 3, got {cap!r}")
        if split_after < 4:
            raise RequestError(f"split_after: must be at least 4, got {split_after!r}")
        self.dim, self.cap, self.split_after, self.seed = dim, cap, split_after, seed
        self._rng = np.random.default_rng(seed)
        self._centres = np.zeros((1, dim))  # unit centres; the root's is unused
        self._counts = [0]  # embeddings learned below each cluster
        self._parent = [-1]
        self._children: list[tuple[int, ...]] = [()]
        # Leaves that may still split: their first embeddings (float32 halves the memory
        # and changes no split: 2-means starts from them, the centres are float64).
        self._waiting: dict[int, list[npt.NDArray[np.float32]]] = {0: []}

    def __len__(self) -> int:
        return len(self._counts)

    def _leaf(self, x: FloatArray) -> list[int]:
        path, node = [], 0
        while self._children[node]:
            kids = self._children[node]
            node = kids[int(np.argmax(self._centres[list(kids)] @ x))]
            path.append(node)
        return path

    def predict_one(self, x: npt.ArrayLike) -> tuple[int, ...]:
        """The clusters of ``x``, coarse to fine (the root left out).

        An embedding that is zero or not finite belongs to no cluster: ``()``.
        One of the wrong length raises :class:`~bandit.errors.RequestError`.
        """
        u = _unit(x, self.dim)
        return () if u is None else tuple(self._leaf(u))

    def learn_one(self, x: npt.ArrayLike) -> None:
        """Add ``x`` to its clusters; its leaf splits once it has gathered enough.

        An embedding that is zero or not finite is ignored.
        """
        u = _unit(x, self.dim)
        if u is None:
            return
        path = self._leaf(u)
        for node in (0, *path):
            self._counts[node] += 1
        leaf = path[-1] if path else 0
        waiting = self._waiting.get(leaf)
        if waiting is None:
            return
        waiting.append(u.astype(np.float32))
        if len(waiting) >= self.split_after:
            self._split(leaf)

    def _split(self, leaf: int) -> None:
        x = np.array(self._waiting.pop(leaf), dtype=np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        centres, side = _two_means(x, self._rng)
        if np.bincount(side, minlength=2).min() == 0:
            self._waiting[leaf] = []  # all alike so far: try again on the next ones
            return
        kids = []
        for j in range(2):
            kids.append(len(self._counts))
            self._centres = np.vstack([self._centres, centres[j]])
            self._counts.append(int((side == j).sum()))
            self._parent.append(leaf)
            self._children.append(())
        self._children[leaf] = tuple(kids)
        if len(self._counts) + 2 <= self.cap:
            self._waiting.update((k, []) for k in kids)
        else:  # no room for another split: no leaf needs its embeddings any more
            self._waiting.clear()

    # -- inspection and persistence --------------------------------------------------
    def count(self, node: int) -> int:
        """How many embeddings were learned in a cluster (those it was split from too)."""
        return self._counts[node]

    def parent(self, node: int) -> int:
        """The parent of a cluster (-1 for the root)."""
        return self._parent[node]

    def leaves(self) -> list[int]:
        """The clusters that have not split, in id order."""
        return [n for n, kids in enumerate(self._children) if not kids]

    def to_dict(self, *, waiting: bool = True) -> dict[str, Any]:
        """A JSON-ready state; :meth:`from_dict` restores a tree that assigns alike.

        ``waiting=False`` leaves out the embeddings the leaves gather before they split
        (each is one prompt's, and an embedding can give away some of its words): the
        restored tree assigns alike, and its leaves gather afresh.
        """
        out = {
            "dim": self.dim, "cap": self.cap, "split_after": self.split_after,
            "seed": self.seed, "rng": self._rng.bit_generator.state,
            "centres": _encode(self._centres), "counts": list(self._counts),
            "parent": list(self._parent), "children": [list(k) for k in self._children],
            "waiting": {str(n): _encode(np.array(w if waiting else [], dtype=np.float32)
                                        .reshape(-1, self.dim))
                        for n, w in self._waiting.items()},
        }
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ClusterTree:
        """The tree saved by :meth:`to_dict`."""
        try:
            tree = cls(int(raw["dim"]), cap=int(raw["cap"]),
                       split_after=int(raw["split_after"]), seed=int(raw["seed"]))
            n = len(raw["counts"])
            tree._rng.bit_generator.state = dict(raw["rng"])
            tree._centres = _decode(raw["centres"], np.float64, (n, tree.dim))
            tree._counts = [int(c) for c in raw["counts"]]
            tree._parent = [int(p) for p in raw["parent"]]
            tree._children = [tuple(int(c) for c in k) for k in raw["children"]]
            tree._waiting = {
                int(node): list(_decode(w, np.float32, (-1, tree.dim)))
                for node, w in raw["waiting"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise RequestError(f"cluster tree: corrupt saved state: {exc}") from exc
        return tree


def with_clusters(context: Context, path: tuple[int, ...]) -> Context:
    """``context`` with its clusters of meaning (a :meth:`ClusterTree.predict_one` path),
    for the policy to pool grades along (:func:`bandit.kinds.kind_path`).

    >>> from bandit.features import featurize, parse_request
    >>> with_clusters(featurize(parse_request(prompt="hi")), (1, 4)).namespaces["k"]
    ('cluster=1', 'cluster=4')
    """
    namespaces = dict(context.namespaces)
    namespaces[CLUSTER_NAMESPACE] = tuple(f"{CLUSTER_TAG}{c}" for c in path)
    return dataclasses.replace(context, namespaces=namespaces)
