"""The policy owns the tree of clusters of meaning: saved and restored with it, absent
from policies saved before it; each decision names the kind it pooled."""

from __future__ import annotations

import numpy as np
import pytest

from bandit.catalog import Catalog
from bandit.clusters import ClusterTree, with_clusters
from bandit.decision import Decision
from bandit.features import featurize, parse_request
from bandit.kinds import kind_source
from bandit.policy import Policy

CATALOG = Catalog.from_dict({"models": [{"name": "a"}, {"name": "b"}]})


def _grown(seed: int = 0) -> ClusterTree:
    rng = np.random.default_rng(seed)
    tree = ClusterTree(8, split_after=8, seed=seed)
    for i in range(100):
        tree.learn_one(np.eye(8)[i % 3] * 4 + rng.normal(size=8))
    return tree


def test_a_policy_without_a_tree_saves_and_loads_as_before() -> None:
    policy = Policy(CATALOG, seed=1)
    assert "clusters" not in Policy.read_metadata(policy.to_bytes())
    loaded = Policy.from_bytes(policy.to_bytes())
    assert loaded.clusters is None
    assert loaded.cluster_path(np.ones(8)) == ()
    loaded.learn_clusters(np.ones(8))  # nothing to grow: no error
    assert loaded.clusters is None


def test_the_tree_is_saved_and_restored_with_the_policy() -> None:
    policy = Policy(CATALOG, seed=1)
    policy.set_clusters(_grown())
    probes = np.random.default_rng(9).normal(size=(20, 8))
    loaded = Policy.from_bytes(policy.to_bytes())
    assert loaded.clusters is not None
    # Saved without the leaves' gathered embeddings (each is one prompt's): the same
    # tree otherwise, assigning alike.
    assert loaded.clusters.to_dict() == policy.clusters.to_dict(  # type: ignore[union-attr]
        waiting=False)
    assert [loaded.cluster_path(x) for x in probes] == [policy.cluster_path(x) for x in probes]
    assert policy.clone().clusters is not policy.clusters  # an independent copy


@pytest.mark.parametrize("kind, source", [
    ("task=qa", "tag"), ("head=translate", "template"), ("head=a|shead=b", "template"),
    ("cluster=7", "cluster"), (None, "none"), ("", "none"),
], ids=["tag", "template", "template+system", "cluster", "none", "empty"])
def test_kind_sources(kind: str | None, source: str) -> None:
    assert kind_source(kind) == source


def test_a_decision_names_its_kind_and_keeps_it_through_a_round_trip() -> None:
    policy = Policy(CATALOG, seed=1)
    ctx = with_clusters(featurize(parse_request(prompt="Translate to French: cheese")), (1, 4))
    d = policy.decide(ctx)
    assert kind_source(d.extra.get("kind")) in ("cluster", "template")
    assert Decision.from_dict(d.to_dict()).extra == d.extra
    bare = policy.decide(featurize(parse_request(prompt="")))
    assert "extra" not in bare.to_dict() or bare.extra  # written only when there is some
