"""Learner: every feedback is learned exactly once, across checkpoints and crashes."""

from __future__ import annotations

import uuid

from bandit import Catalog, Policy, featurize, parse_request
from feedback.learner import Learner
from feedback.records import LearnItem
from feedback.store import Store

CATALOG = Catalog.from_dict({"models": [{"name": "a"}, {"name": "b"}, {"name": "c"}]})
PROMPTS = ["sort a list in python", "poem about the sea", "integral of x^2",
           "translate hello to german", "fix this SQL query", "summarise this article"]


def fresh() -> Policy:
    return Policy(CATALOG, seed=11)


def log_feedback(store: Store, policy: Policy, n: int) -> list[LearnItem]:
    """n decisions by ``policy`` with feedback; the items the learner will see."""
    items = []
    for i in range(n):
        d = policy.decide(featurize(parse_request(prompt=PROMPTS[i % len(PROMPTS)])))
        decision_id = uuid.uuid4().hex
        store.record_decision(decision_id=decision_id, decision=d, tenant="t")
        score = 1.0 if d.model == "b" else 0.2
        res = store.record_feedback(decision_id=decision_id, tenant="t", score=score,
                                    reward=score, reward_cost_usd=0.0, reward_latency_ms=0.0)
        items.append(LearnItem(seq=res.record.seq, decision=d, reward=score, outcome={}))
    return items


def probe(policy: Policy) -> list[float]:
    ctx = featurize(parse_request(prompt="sort a list in python"))
    return policy.scores(ctx, policy.actions_for(ctx))


def test_resume_after_a_crash_learns_each_feedback_once(store: Store) -> None:
    learner = Learner(store, checkpoint_every=10_000, checkpoint_interval_s=1e9)
    policy = learner.resume(fresh)
    items = log_feedback(store, policy.clone(), 30)  # all 30 committed
    learner.learn_many(items[:12])
    learner.checkpoint()
    learner.learn_many(items[12:20])  # learned in memory only, then the process dies
    del learner, policy

    reborn = Learner(store)
    resumed = reborn.resume(fresh)
    # 12 from the checkpoint, then 13..30 in feedback order: nothing twice, nothing lost
    assert resumed.n_learned == 30
    assert list(store.unlearned()) == [] and store.count("learn_log") == 30
    reference = fresh()  # the same 30 steps in the same order, never interrupted
    for item in items:
        reference.learn(item.decision, item.reward)
    assert probe(resumed) == probe(reference)

    more = log_feedback(store, resumed.clone(), 4)  # new feedback after the restart
    assert reborn.learn_many(more) == 4
    assert reborn.learn_many(more) == 0  # a repeat in the same lineage is skipped
    reborn.checkpoint()
    assert reborn.policy.n_learned == 34 and store.count("learn_log") == 34
    assert Learner(store).resume(fresh).n_learned == 34


def test_resume_without_checkpoint_learns_everything(store: Store) -> None:
    items = log_feedback(store, fresh(), 5)
    learner = Learner(store)
    policy = learner.resume(fresh)
    assert policy.n_learned == 5 and learner.pending == 0
    assert learner.last_checkpoint is not None and learner.last_checkpoint.reason == "resume"
    assert learner.last_checkpoint.last_feedback_seq == items[-1].seq


def test_forced_decisions_can_be_left_unlearned(store: Store) -> None:
    learner = Learner(store, learn_forced=False)
    learner.resume(fresh)
    d = fresh().decide(featurize(parse_request(prompt="hi")))
    learner.learn_many([LearnItem(seq=1, decision=d, reward=1.0, kind="passthrough")])
    assert learner.policy.n_learned == 0 and learner.pending == 1


def test_swap_checkpoints_the_new_policy(store: Store) -> None:
    learner = Learner(store)
    learner.resume(fresh)
    new = fresh()
    new.set_version("v2")
    cp = learner.swap(new)
    assert cp.reason == "swap" and cp.policy_version == "v2"
    assert Learner(store).resume(fresh).version == "v2"
