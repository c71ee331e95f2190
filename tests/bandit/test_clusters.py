"""The streaming cluster tree: deterministic, recovers planted topics, keeps its ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.clusters import ClusterTree, with_clusters
from bandit.errors import RequestError
from bandit.features import featurize, parse_request
from bandit.kinds import kind_path

DIM = 256


def blobs(n_topics: int, n: int, *, seed: int = 0, spread: float = 1.2) -> tuple[
        np.ndarray, np.ndarray]:
    """``n`` points of ``n_topics`` Gaussian blobs around random directions, shuffled.

    With ``spread`` 1.2 two points of a topic have a cosine near 0.4 and of two topics
    near 0: a little further apart than the questions of two RouterBench tasks (0.33
    within a task, 0.05 to 0.23 between two, in wordllama's embedding).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_topics, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    topic = rng.integers(n_topics, size=n)
    x = centres[topic] + rng.normal(scale=spread / np.sqrt(DIM), size=(n, DIM))
    return x, topic


def grown(x: np.ndarray, **kw: int) -> ClusterTree:
    tree = ClusterTree(DIM, **kw)
    for row in x:
        tree.learn_one(row)
    return tree


def purity(labels: list[int], truth: np.ndarray) -> float:
    hits = 0
    for c in set(labels):
        mine = truth[np.array(labels) == c]
        hits += int(np.bincount(mine).max())
    return hits / len(truth)


def test_same_seed_and_order_same_tree() -> None:
    x, _ = blobs(4, 600)
    a, b = grown(x, seed=3), grown(x, seed=3)
    assert a.to_dict() == b.to_dict()
    assert [a.predict_one(r) for r in x] == [b.predict_one(r) for r in x]


@pytest.mark.parametrize("n_topics", [2, 5, 8], ids=lambda k: f"{k}-topics")
def test_planted_topics_are_recovered(n_topics: int) -> None:
    x, topic = blobs(n_topics, 2000, seed=n_topics)
    tree = grown(x[:1500])
    test = [tree.predict_one(r)[-1] for r in x[1500:]]
    assert purity(test, topic[1500:]) >= 0.95
    # Not by putting every point alone: far fewer clusters than points.
    assert len(set(test)) <= len(tree) <= 64


def test_ids_are_stable_when_a_new_topic_arrives() -> None:
    x, topic = blobs(4, 4800, seed=1)
    old, new = x[topic < 3], x[topic == 3]
    tree = grown(old[:900])
    before = [tree.predict_one(r) for r in old]
    ids_before = len(tree)
    for row in new[:600]:  # a topic never seen before
        tree.learn_one(row)
    after = [tree.predict_one(r) for r in old]
    assert len(tree) > ids_before  # it made room for the new topic ...
    # ... below the old clusters, without renumbering or moving them: an old prompt's
    # clusters are still its clusters (it may only have gone deeper).
    assert all(a[: len(b)] == b for a, b in zip(after, before, strict=True))
    # The new topic gets clusters of its own as its share of the old leaves split.
    held_out = np.concatenate([old[900:1800], new[600:900]])
    truth = np.concatenate([np.zeros(900, dtype=int), np.ones(300, dtype=int)])
    assert purity([tree.predict_one(r)[-1] for r in held_out], truth) >= 0.95


def test_save_and_restore_assign_and_grow_alike() -> None:
    x, _ = blobs(3, 900, seed=2)
    tree = grown(x[:500], seed=5)
    again = ClusterTree.from_dict(json.loads(json.dumps(tree.to_dict())))
    assert [again.predict_one(r) for r in x] == [tree.predict_one(r) for r in x]
    for row in x[500:]:  # the restored tree goes on exactly as the original
        tree.learn_one(row)
        again.learn_one(row)
    assert again.to_dict() == tree.to_dict()


def test_corrupt_state_is_refused_clearly() -> None:
    raw = grown(blobs(2, 100)[0]).to_dict()
    del raw["centres"]
    with pytest.raises(RequestError, match="corrupt"):
        ClusterTree.from_dict(raw)


@pytest.mark.parametrize("cap", [3, 9, 20], ids=lambda c: f"cap-{c}")
def test_the_cap_holds_and_frees_the_waiting_embeddings(cap: int) -> None:
    tree = grown(blobs(6, 3000, seed=4)[0], cap=cap, split_after=16)
    assert len(tree) <= cap
    assert len(tree) > cap - 2  # it did grow to the cap
    assert tree.to_dict()["waiting"] == {}


def test_bad_embeddings_belong_to_no_cluster_and_are_not_learned() -> None:
    tree = grown(blobs(2, 200)[0], split_after=16)
    state = tree.to_dict()
    for bad in (np.zeros(DIM), np.full(DIM, np.nan), np.full(DIM, np.inf)):
        assert tree.predict_one(bad) == ()
        tree.learn_one(bad)
    assert tree.to_dict() == state
    with pytest.raises(RequestError, match="expected 256 numbers, got 3"):
        tree.predict_one([1.0, 2.0, 3.0])
    with pytest.raises(RequestError, match="must be 256 numbers"):
        tree.learn_one(["a"] * DIM)


def test_a_leaf_of_identical_prompts_waits_for_different_ones() -> None:
    tree = ClusterTree(DIM, split_after=8)
    same = blobs(1, 1)[0][0]
    for _ in range(20):
        tree.learn_one(same)
    assert len(tree) == 1 and tree.count(0) == 20
    for row in blobs(2, 16, seed=9)[0]:
        tree.learn_one(row)
    assert len(tree) == 3


@pytest.mark.parametrize("kw", [{"dim": 0}, {"cap": 2}, {"split_after": 3}],
                         ids=["dim", "cap", "split_after"])
def test_bad_arguments_are_refused(kw: dict[str, int]) -> None:
    args = {"dim": DIM, **kw}
    with pytest.raises(RequestError, match=next(iter(kw))):
        ClusterTree(args.pop("dim"), **args)


def test_clusters_become_the_coarse_kinds_of_a_prompt() -> None:
    ctx = featurize(parse_request(prompt="What is the capital of France?"))
    path = kind_path(with_clusters(ctx, (1, 4)))
    assert path[:2] == ("cluster=1", "cluster=4") and path[2].startswith("head=")
    tagged = featurize(parse_request(prompt="hi", metadata={"task": "qa"}))
    assert kind_path(with_clusters(tagged, (1,))) == ("task=qa",)  # the caller knows best


vectors = st.lists(
    st.lists(st.one_of(st.floats(-10, 10), st.just(0.0)), min_size=4, max_size=4),
    min_size=1, max_size=120)


@settings(max_examples=60, deadline=None)
@given(stream=vectors, cap=st.integers(3, 12), seed=st.integers(0, 3))
def test_any_stream_gives_valid_paths_within_the_cap(stream: list[list[float]], cap: int,
                                                     seed: int) -> None:
    tree = ClusterTree(4, cap=cap, split_after=4, seed=seed)
    for row in stream:
        path = tree.predict_one(row)
        tree.learn_one(row)
        assert all(0 < c < len(tree) for c in path)
        assert [tree.parent(c) for c in path] == [0, *path][:-1]
    assert len(tree) <= cap
    assert len(tree.leaves()) == (len(tree) + 1) // 2
