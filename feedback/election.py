"""One learner among several serving processes, elected through PostgreSQL.

Every serving process that shares a PostgreSQL database runs a :class:`ClusterLearner`.
Exactly one of them holds a session-level advisory lock (:class:`AdvisoryLock`) and is
the *learner*: it learns every feedback in the database, whichever process took it, and
publishes its policy as checkpoints. The others are *followers*: they learn nothing,
and adopt each newer checkpoint when :meth:`ClusterLearner.tick` finds one. Each
follower is also a standby: PostgreSQL releases the lock the moment the learner's
connection dies (a killed process closes its socket; a silent network loss is found
by TCP keepalives within ~15 s), and the next follower to ``tick`` takes over: it loads
the newest checkpoint, learns exactly the feedback no checkpoint has learned, and
checkpoints.

Exactly-once learning holds across takeovers for the reason it holds across restarts
(see :mod:`feedback.learner`): a checkpoint records, in its transaction, which feedback
it has learned, and a feedback can be recorded once only (``learn_log``'s primary
key). A checkpoint is also fenced: it is written only after the lock is confirmed on
the lock's own connection, so a learner that lost the lock stops publishing.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable

from sqlalchemy import Connection, create_engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from bandit.errors import PolicyError
from bandit.policy import Policy
from feedback.errors import StoreError
from feedback.learner import Learner
from feedback.models import CheckpointRow
from feedback.records import Checkpoint, LearnItem
from feedback.store import Store

log = logging.getLogger(__name__)

LEARNER = "learner"
FOLLOWER = "follower"

# Feedback is polled by sequence number from a little below the newest one learned: a
# feedback whose transaction commits more than this many sequence numbers late is
# learned at the next takeover or restart instead (which scan everything).
SEQ_WINDOW = 10_000


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock held on a connection of its own.

    The key is derived from ``name`` and the connection's schema, so databases (or test
    schemas) sharing one server never contend.
    """

    def __init__(self, url: str, name: str = "routebandit-learner") -> None:
        self.url = url
        self.name = name
        self._engine = create_engine(
            url, poolclass=NullPool,
            connect_args={"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                          "keepalives_count": 3, "connect_timeout": 5},
        )
        self._conn: Connection | None = None
        self._keys: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def _connect(self) -> Connection:
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        # The server notices a vanished learner (network loss, frozen host) by these.
        for setting, value in (("tcp_keepalives_idle", 5), ("tcp_keepalives_interval", 2),
                               ("tcp_keepalives_count", 3)):
            conn.exec_driver_sql(f"SET {setting} = {value}")
        conn.exec_driver_sql("SET statement_timeout = 5000")
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
        digest = hashlib.sha256(f"{self.name}:{schema}".encode()).digest()
        self._keys = (int.from_bytes(digest[:4], "big") >> 1,
                      int.from_bytes(digest[4:8], "big") >> 1)
        return conn

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; ``True`` if this process holds it now."""
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                assert self._keys is not None
                got = self._conn.exec_driver_sql(
                    "SELECT pg_try_advisory_lock(%s, %s)", self._keys).scalar_one()
            except SQLAlchemyError as exc:
                self._drop()
                log.debug("advisory lock: %s", exc)
                return False
            return bool(got)

    def held(self) -> bool:
        """Whether this process still holds the lock (asked on the lock's connection)."""
        with self._lock:
            if self._conn is None or self._keys is None:
                return False
            try:
                return bool(self._conn.exec_driver_sql(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid() AND granted AND classid::bigint = %s "
                    "AND objid::bigint = %s AND objsubid = 2)", self._keys).scalar_one())
            except SQLAlchemyError as exc:
                log.warning("advisory lock: connection lost: %s", exc)
                self._drop()
                return False

    def release(self) -> None:
        with self._lock:
            self._drop()
        self._engine.dispose()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()  # closing the session releases the lock
            except SQLAlchemyError:
                pass
            self._conn = None


class ClusterLearner(Learner):
    """A :class:`~feedback.learner.Learner` for one of several processes (see module doc).

    The service's own learning queue is ignored (:meth:`learn_many` learns nothing): the
    elected learner learns from the database, where every process's feedback is, in
    :meth:`tick`. Call :meth:`tick` every ``poll_s``; it returns a policy to serve when
    the process took over or a newer checkpoint was published.
    """

    def __init__(self, store: Store, lock: AdvisoryLock, **kwargs: object) -> None:
        super().__init__(store, **kwargs)  # type: ignore[arg-type]
        self.lock = lock
        self.role = FOLLOWER
        self.served_checkpoint: int | None = None
        self._high_seq = 0
        self.takeovers = 0
        # Reading the unlearned feedback and learning it must not straddle a checkpoint
        # (which marks feedback learned): one round at a time.
        self._round = threading.RLock()

    @property
    def leader(self) -> bool:
        return self.role == LEARNER

    # -- the Learner interface, cluster style -------------------------------------------
    def resume(self, make_policy: Callable[[], Policy]) -> Policy:
        """Serve the newest checkpoint; learning waits for the election (:meth:`tick`)."""
        policy, cp = self._load(make_policy)
        with self._lock:
            self.served_checkpoint = None if cp is None else cp.id
        return policy

    def learn_many(self, items: object) -> int:
        return 0  # the elected learner reads every process's feedback from the database

    def due(self) -> bool:
        return False  # the service's learning loop never checkpoints: tick() does

    def checkpoint(self, reason: str = "periodic") -> Checkpoint:
        with self._round:
            return self._checkpoint(reason)

    def _checkpoint(self, reason: str) -> Checkpoint:
        if not self.leader:
            if self.last_checkpoint is None:
                raise PolicyError("this process is not the learner; it has no checkpoint")
            return self.last_checkpoint
        if not self.lock.held():  # fencing: never publish without the lock
            self._demote()
            raise StoreError("checkpoint refused: this process lost the learner lock")
        cp = super().checkpoint(reason)
        self.served_checkpoint = cp.id
        return cp

    def swap(self, policy: Policy) -> Checkpoint | None:  # type: ignore[override]
        """Serve ``policy``; the learner also publishes it (a follower only serves it)."""
        with self._lock:
            same = policy is self._policy
            self._policy = policy
        if same or not self.leader:
            return self.last_checkpoint
        return self.checkpoint("swap")

    # -- election and following ----------------------------------------------------------
    def tick(self) -> Policy | None:
        """One round: learn (learner), take over (free lock) or follow (newer checkpoint).

        Returns the policy the service should serve from now on, if it changed.
        """
        with self._round:
            if self.leader:
                if not self.lock.held():
                    self._demote()
                    return None
                self._learn_new(after_seq=max(0, self._high_seq - SEQ_WINDOW))
                if super().due():
                    self._checkpoint("periodic")
                return None
            if self.lock.try_acquire():
                return self._take_over()
        newest = self._newest_checkpoint_id()
        if newest is None or newest == self.served_checkpoint:
            return None
        cp = self.store.latest_checkpoint()
        if cp is None or cp.blob is None:
            return None
        policy = Policy.from_bytes(cp.blob)
        with self._lock:
            self._policy = policy
            self.last_checkpoint = cp
            self.served_checkpoint = cp.id
        return policy

    def _take_over(self) -> Policy:
        cp = self.store.latest_checkpoint()
        with self._lock:
            if cp is not None and cp.blob:
                self._policy = Policy.from_bytes(cp.blob)
            self.last_checkpoint = cp
            self._pending.clear()
            self._pending_seqs.clear()
            self.role = LEARNER
            self.takeovers += 1
        n = self._learn_new(after_seq=None)  # everything no checkpoint has learned
        self.checkpoint("takeover")
        log.warning("this process is now the learner (checkpoint %s, caught up %d feedback)",
                    None if cp is None else cp.id, n)
        return self.policy

    def _learn_new(self, *, after_seq: int | None) -> int:
        items: list[LearnItem] = list(self.store.unlearned(after_seq=after_seq))
        n = super().learn_many(items)
        if items:
            self._high_seq = max(self._high_seq, items[-1].seq)
        return n

    def _demote(self) -> None:
        with self._lock:
            if self.role == LEARNER:
                log.warning("this process lost the learner lock; following from now on")
            self.role = FOLLOWER
            # The new learner relearns these from the last checkpoint.
            self._pending.clear()
            self._pending_seqs.clear()

    def _newest_checkpoint_id(self) -> int | None:
        stmt = select(func.max(CheckpointRow.id)).where(CheckpointRow.blob.is_not(None))
        try:
            with self.store.engine.connect() as conn:
                return conn.execute(stmt).scalar_one_or_none()
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc.__class__.__name__}: {exc}") from exc

    def close(self) -> None:
        self.lock.release()
        self.role = FOLLOWER


__all__ = ["FOLLOWER", "LEARNER", "AdvisoryLock", "ClusterLearner"]
