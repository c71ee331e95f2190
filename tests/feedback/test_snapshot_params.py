"""Snapshots carry the number of clusters of meaning and the caller's parameters (the
service's embedder)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bandit.clusters import ClusterTree
from bandit.policy import Policy
from feedback import synthetic
from feedback.training import relearn
from feedback.versions import SnapshotSchedule, Snapshotter


class _Logger:
    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []

    def log_policy_version(self, policy: Policy, *, examples: Sequence[Any] = (),
                           kind: str = "snapshot",
                           params: Mapping[str, Any] | None = None) -> Any:
        self.params.append(dict(params or {}))
        return len(self.params)


def test_a_snapshot_logs_the_embedder_and_the_number_of_clusters() -> None:
    policy = Policy(synthetic.catalog(), seed=0)
    relearn(policy, synthetic.traffic(10, seed=1))
    tree = ClusterTree(4, split_after=4)
    for x in np.random.default_rng(0).normal(size=(20, 4)):
        tree.learn_one(x)
    policy.set_clusters(tree)
    logger = _Logger()
    snap = Snapshotter(logger, schedule=SnapshotSchedule(every_n=1),
                       params=lambda: {"embedder": "local"})
    assert snap.snapshot(policy, reason="shutdown") == 1
    assert logger.params == [{"embedder": "local", "snapshot.reason": "shutdown",
                              "clusters": len(tree)}]
