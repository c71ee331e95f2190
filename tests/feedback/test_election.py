"""ClusterLearner: one learner by advisory lock, followers adopt its checkpoints, a
learner that lost the lock is fenced off, a standby takes over and learns each feedback
once (PostgreSQL; in one process, two learners as two serving processes would be)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from feedback.election import FOLLOWER, LEARNER, AdvisoryLock, ClusterLearner
from feedback.errors import StoreError
from feedback.store import Store
from tests.databases import database_url
from tests.feedback.test_learner import fresh, log_feedback

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Store]:
    for url in database_url("postgres", tmp_path):
        store = Store(url)
        yield store
        store.close()


def _learner(store: Store) -> ClusterLearner:
    return ClusterLearner(store, AdvisoryLock(store.url), checkpoint_every=10_000,
                          checkpoint_interval_s=1e9)


def test_one_learner_fencing_and_takeover(pg: Store) -> None:
    a, b = _learner(pg), _learner(pg)
    try:
        a.resume(fresh), b.resume(fresh)
        assert a.tick() is not None and a.role == LEARNER  # took the free lock
        assert b.tick() is not None and b.role == FOLLOWER  # follows a's first checkpoint
        assert b.tick() is None                              # nothing newer since
        log_feedback(pg, fresh(), 10)
        assert a.tick() is None and a.policy.n_learned == 10
        assert a.learn_many([]) == 0  # the service's own queue is ignored
        a.checkpoint("periodic")
        followed = b.tick()
        assert followed is not None and followed.n_learned == 10 and b.role == FOLLOWER

        log_feedback(pg, fresh(), 5)
        assert a.tick() is None and a.policy.n_learned == 15  # learned, not checkpointed
        # The learner's lock connection dies (e.g. a network cut): PostgreSQL frees the lock.
        admin = create_engine(pg.url)
        with admin.begin() as conn:
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_locks "
                                 "WHERE locktype = 'advisory' AND objsubid = 2 "
                                 "AND database = (SELECT oid FROM pg_database "
                                 "WHERE datname = current_database()) "
                                 "AND classid::bigint = %s AND objid::bigint = %s",
                                 a.lock._keys)
        admin.dispose()
        taken = None
        for _ in range(50):  # the terminated backend exits, and frees the lock, shortly after
            taken = b.tick()  # the standby takes over: checkpoint (10) + the 5 unlearned
            if taken is not None:
                break
            time.sleep(0.05)
        assert taken is not None and b.role == LEARNER and taken.n_learned == 15
        with pytest.raises(StoreError, match="lost the learner lock"):
            a.checkpoint("periodic")  # fenced: the old learner cannot publish
        assert a.role == FOLLOWER
        adopted = a.tick()
        assert adopted is not None and adopted.n_learned == 15
        assert pg.count("learn_log") == pg.count("feedback") == 15
    finally:
        a.close()
        b.close()
