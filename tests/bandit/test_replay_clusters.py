"""Replay routed by meaning: the tree grown as the service grows it, and what it found."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from bandit.catalog import Catalog, ModelSpec
from bandit.errors import RequestError
from bandit.outcomes import OutcomeTable
from bandit.policy import Policy
from bandit.replay import (
    ReplayConfig,
    grow_clusters,
    normalized_mutual_information,
    purity,
    replay,
    train_order,
)

TOPICS = 3
MODELS = ("m0", "m1", "m2")


def planted(n: int = 450, *, dim: int = 16, seed: int = 0) -> tuple[OutcomeTable, np.ndarray]:
    """Prompts of random words, no template, nothing in them tells their hidden topic:
    only the embedding does, and model ``m{topic}`` is the one that answers that topic
    well (all cost alike)."""
    rng = np.random.default_rng(seed)
    topic = np.arange(n) % TOPICS
    centres = rng.normal(size=(TOPICS, dim)) * 4.0
    e = centres[topic] + rng.normal(size=(n, dim))
    quality = np.where(np.eye(TOPICS)[topic] > 0, rng.random((n, TOPICS)) < 0.9,
                       rng.random((n, TOPICS)) < 0.2).astype(float)
    table = OutcomeTable.from_rows(
        [f"p{i}" for i in range(n)], [f"topic{t}" for t in topic],
        ["test" if i % 10 < 3 else "train" for i in range(n)],
        [" ".join(f"w{k}" for k in rng.integers(100_000, size=6)) for _ in range(n)],
        MODELS, quality=quality,
        cost_usd=np.full((n, TOPICS), 0.001), output_chars=np.full((n, TOPICS), 100.0))
    return table, e


@pytest.mark.parametrize("seed", [0, 1, 2], ids=lambda s: f"seed{s}")
def test_purity_and_nmi_agree_with_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(5, size=200).tolist()
    truth = [f"t{(x + int(rng.random() < 0.3)) % 3}" for x in labels]
    assert normalized_mutual_information(labels, truth) == pytest.approx(
        normalized_mutual_info_score(truth, labels))
    hits = sum(max(sum(1 for a, b in zip(labels, truth, strict=True) if a == c and b == t)
                   for t in set(truth)) for c in set(labels))
    assert purity(labels, truth) == pytest.approx(hits / 200)


def test_nmi_of_trivial_labellings() -> None:
    assert normalized_mutual_information([0, 0], ["a", "a"]) == 1.0
    assert normalized_mutual_information([0, 1], ["a", "a"]) == 0.0
    assert normalized_mutual_information([], []) == 1.0


def test_the_tree_grows_as_the_service_grows_it() -> None:
    # The service: each prompt's clusters read from the policy's tree before its
    # decision, the tree grown after it (serving/service.py), in arrival order.
    table, e = planted()
    paths, tree = grow_clusters(table, e, seed=3)
    policy = Policy(Catalog.of(ModelSpec(name=m) for m in MODELS), seed=3)
    from bandit.clusters import ClusterTree

    policy.set_clusters(ClusterTree(e.shape[1], seed=policy.seed))
    for i in train_order(table, 3):
        assert policy.cluster_path(e[i]) == paths[i]
        policy.learn_clusters(e[i])
    assert policy.clusters is not None
    assert policy.clusters.to_dict() == tree.to_dict()
    for i in table.indices("test"):
        assert policy.cluster_path(e[i]) == paths[i]


def test_a_prompt_without_an_embedding_has_no_clusters() -> None:
    table, e = planted()
    e[:5] = 0.0
    paths, tree = grow_clusters(table, e, seed=0)
    assert all(p == () for p in paths[:5])
    assert tree.count(0) == len(table.indices("train")) - sum(
        1 for i in range(5) if table.splits[i] == "train")


def test_embeddings_of_the_wrong_shape_are_refused() -> None:
    table, e = planted()
    with pytest.raises(RequestError, match="one row per prompt"):
        grow_clusters(table, e[:-1], seed=0)


def test_meaning_finds_the_planted_topics_and_routes_by_them() -> None:
    table, e = planted()
    config = ReplayConfig(cost_weights=(0.0, 0.5), curve_every=50)
    blind = replay(table, config)
    seeing = replay(table, config, embeddings=e)
    assert blind.clusters is None
    found = seeing.clusters
    assert found is not None
    assert found.purity is not None and found.purity >= 0.95
    assert found.nmi is not None and found.nmi > 0.5
    assert found.n_clusters >= 3 and found.depth >= 1
    assert sum(found.leaf_sizes) == table.n_prompts
    assert found.n_learned == len(table.indices("train"))
    assert 0 < found.checkpoint_bytes < 64 * 2 * 8 * 16 * 2
    # The best model of each topic is m{topic}: only meaning can tell.
    assert max(p.quality for p in seeing.bandit.points) > max(
        p.quality for p in blind.bandit.points) + 0.2
    out = seeing.to_dict()["clusters"]
    assert out["n_clusters"] == found.n_clusters and out["purity"] == found.purity
    assert replay(table, config, embeddings=e).clusters == found  # deterministic
