"""Several serving processes, one brain: real ``routebandit serve`` processes share the
PostgreSQL at ROUTEBANDIT_TEST_DATABASE_URL; one learner is elected by an advisory lock,
the others follow its checkpoints, and a standby takes over when the learner is killed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from feedback.store import Store
from tests.databases import database_url
from tests.fakes.serve_process import ServeProcess

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

POLL_S = 0.3
CHECKPOINT_S = 0.5
# What the test holds the deployment to (docs/deploy.md derives these from the settings).
TAKEOVER_BOUND_S = 5.0
PUBLISH_BOUND_S = 5.0


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    yield from database_url("postgres", tmp_path)


def _state(p: ServeProcess) -> dict[str, Any]:
    r = httpx.get(f"{p.url}/v1/policy", timeout=5)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


_PROCS: list[ServeProcess] = []


def _states() -> list[Any]:
    out = []
    for p in _PROCS:
        log = p.log_path.read_text(errors="replace")[-1500:] if p.log_path.exists() else ""
        out.append((p.port, _state(p) if p.alive else "dead", log))
    return out


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not cond():
        assert time.monotonic() - started < timeout, f"timed out: {what}: {_states()}"
        time.sleep(0.05)
    return time.monotonic() - started


def _traffic(procs: list[ServeProcess], n: int, offset: int = 0) -> None:
    # Each decision is made by one process and scored through another.
    with httpx.Client(timeout=10) as http:
        for k in range(n):
            a, b = procs[k % len(procs)], procs[(k + 1) % len(procs)]
            r = http.post(f"{a.url}/v1/route", json={"prompt": f"question {offset + k}"})
            assert r.status_code == 200, r.text
            r = http.post(f"{b.url}/v1/feedback", json={
                "decision_id": r.json()["decision_id"], "score": (k % 5) / 4})
            assert r.status_code == 200, r.text
            assert r.json()["duplicate"] is False


def test_one_learner_followers_and_takeover(tmp_path: Path, pg_url: str) -> None:
    env = {"ROUTEBANDIT_CLUSTER_ENABLED": "1", "ROUTEBANDIT_CLUSTER_POLL_S": str(POLL_S),
           "ROUTEBANDIT_CHECKPOINT_INTERVAL_S": str(CHECKPOINT_S),
           "ROUTEBANDIT_POLICY_VERSIONS": "false", "ROUTEBANDIT_FLUSH_INTERVAL_MS": "20",
           # One feature key for all (each data directory would make its own).
           "ROUTEBANDIT_FEATURE_KEY": "cluster test feature key, shared"}
    procs = [ServeProcess(tmp_path / f"p{i}", env=env, args=("--database-url", pg_url))
             for i in range(3)]
    _PROCS[:] = procs
    try:
        for p in procs:
            p.launch()
        for p in procs:
            p.wait_ready()
        # A role is what a process believes: one that lost the lock learns so at its
        # next poll, and fencing keeps it from publishing meanwhile (test_election.py).
        # So the roles must agree within a poll or two of start-up, not at an instant.
        roles: list[str] = []

        def one_learner_of_three() -> bool:
            roles[:] = [_state(p)["role"] for p in procs]
            return sorted(roles) == ["follower", "follower", "learner"]

        _wait(one_learner_of_three, 4 * POLL_S, "exactly one learner after start-up")

        _traffic(procs, 60)
        delay = _wait(lambda: all(_state(p)["n_learned"] == 60 for p in procs),
                      PUBLISH_BOUND_S, "every process serves a policy that learned all 60")
        print(f"published to every process within {delay:.2f} s")

        leader = procs[roles.index("learner")]
        rest = [p for p in procs if p is not leader]
        leader.kill()

        def one_learner() -> bool:
            return sorted(_state(p)["role"] for p in rest) == ["follower", "learner"]

        took = _wait(one_learner, TAKEOVER_BOUND_S, "a standby takes over")
        print(f"standby took over within {took:.2f} s")
        _traffic(rest, 30, offset=60)
        _wait(lambda: all(_state(p)["n_learned"] == 90 for p in rest), PUBLISH_BOUND_S,
              "the new learner learned everything exactly once and published it")
        assert sorted(_state(p)["role"] for p in rest) == ["follower", "learner"]
        for p in rest:
            p.stop()
        store = Store(pg_url)
        try:
            assert store.count("feedback") == store.count("learn_log") == 90
            final = store.latest_checkpoint()
            assert final is not None and final.n_learned == 90
        finally:
            store.close()
    finally:
        for p in procs:
            p.kill()


def test_cluster_mode_needs_postgresql(tmp_path: Path) -> None:
    p = ServeProcess(tmp_path, env={"ROUTEBANDIT_CLUSTER_ENABLED": "1"})
    with pytest.raises(RuntimeError, match="PostgreSQL"):
        p.start(timeout=30)
