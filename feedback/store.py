"""``Store``: the one door to the database (SQLite by default, PostgreSQL by URL).

The store is synchronous: the service calls it from worker threads, offline tools
(training, off-policy evaluation, the CLI) call it directly. On start it runs the
Alembic migrations to head, so a database made by an older routebandit upgrades in
place. Driver errors are translated into :class:`~feedback.errors.StoreError`.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, delete, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import StaticPool

from bandit.decision import Decision
from bandit.reward import RewardWeights
from feedback.errors import (
    FeedbackConflictError,
    StoreError,
    StoreUnavailableError,
    UnknownDecisionError,
)
from feedback.models import (
    ApiKeyRow,
    CatalogChangeRow,
    CheckpointRow,
    CorrectionRow,
    DeadLetterRow,
    DecisionRow,
    FeedbackRow,
    GradeRow,
    LearnLogRow,
    MetaRow,
    OutcomeRow,
    utcnow,
)
from feedback.records import (
    ApiKeyRecord,
    Checkpoint,
    DecisionBrief,
    DecisionRecord,
    FeedbackInput,
    FeedbackRecord,
    FeedbackResult,
    GradeRecord,
    LearnItem,
    LoggedExample,
    OutcomeRecord,
    PendingDecision,
)
from feedback.rewards import Chosen

MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = 0x726F757465  # "route": the advisory lock serialising migrations


#: The largest the WAL file is left after a reset, on the connections of a store whose
#: WAL a :class:`~feedback.wal.WalCheckpointer` thread checkpoints (SQLite reuses the
#: file rather than shrinking it; ``journal_size_limit`` truncates it back to this). The
#: thread also checkpoints once the file grows past it.
WAL_SIZE_LIMIT = 4 * 1024 * 1024


def _sqlite_pragmas(wal_autocheckpoint: int | None) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cur = dbapi_connection.cursor()
        # WAL: readers never block the writer; NORMAL: a commit survives a process crash
        # (not a power cut) without an fsync per transaction.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=10000")
        if wal_autocheckpoint is not None:
            cur.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint)}")
            cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        try:  # the stats' latency bins use ln(), a math function not every build has
            cur.execute("SELECT ln(1)")
        except sqlite3.OperationalError:
            dbapi_connection.create_function("ln", 1, _ln, deterministic=True)
        cur.close()

    return on_connect


def _ln(x: float | None) -> float | None:
    return math.log(x) if x is not None and x > 0 else None


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _make_engine(url: str, *, wal_autocheckpoint: int | None = None) -> Engine:
    # orjson: decision payloads are the bulk of what the service writes.
    # hide_parameters: driver errors (which reach the logs) never carry the values, e.g.
    # prompt text or key hashes.
    json_args: dict[str, Any] = {"json_serializer": _json_dumps,
                                 "json_deserializer": orjson.loads, "hide_parameters": True}
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        memory = u.database in (None, "", ":memory:")
        if not memory:
            Path(str(u.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            u,
            connect_args={"check_same_thread": False, "timeout": 10},
            **({"poolclass": StaticPool} if memory else {"pool_size": 8, "max_overflow": 8}),
            **json_args,
        )
        event.listen(engine, "connect", _sqlite_pragmas(wal_autocheckpoint))
        return engine
    # An unreachable server fails a connection attempt in seconds (a 503), never hangs it;
    # keepalives and tcp_user_timeout (libpq) give up on an open connection whose server
    # stopped answering (a network cut) in ~15 s instead of TCP's minutes.
    connect: dict[str, Any] = {}
    if u.get_backend_name() == "postgresql":
        connect = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10,
                   "keepalives_interval": 5, "keepalives_count": 3, "tcp_user_timeout": 15000}
    return create_engine(u, pool_pre_ping=True, pool_size=8, max_overflow=8, pool_timeout=10,
                         connect_args=connect, **json_args)


@dataclass
class BatchResult:
    """Per-operation results of :meth:`Store.write_batch`, in the order given."""

    outcomes: list[bool | StoreError] = field(default_factory=list)
    feedback: list[FeedbackResult | StoreError] = field(default_factory=list)


@dataclass(frozen=True)
class WalCheckpoint:
    """What ``PRAGMA wal_checkpoint`` reported (see :meth:`Store.wal_checkpoint`)."""

    busy: bool  # blocked by another checkpoint, or (RESTART, TRUNCATE) by a reader or writer
    log_frames: int  # frames in the WAL
    checkpointed_frames: int  # of which are now in the database file


class Store:
    """Decisions, outcomes, feedback, learner checkpoints, API keys.

    >>> store = Store("sqlite://")
    >>> store.current_revision() == store.head_revision()
    True
    >>> store.close()
    """

    def __init__(
        self, url: str, *, migrate: bool = True, wal_autocheckpoint: int | None = None
    ) -> None:
        # wal_autocheckpoint (SQLite only): the WAL pages after which a commit checkpoints
        # the WAL itself, inside the committing transaction; None keeps SQLite's 1000.
        # The service passes a far larger one, a backstop, and checkpoints from a thread
        # (feedback.wal.WalCheckpointer); its connections then also truncate the WAL
        # file back to WAL_SIZE_LIMIT after each reset.
        self.url = url
        self.wal_autocheckpoint = wal_autocheckpoint
        try:
            self.engine = _make_engine(url, wal_autocheckpoint=wal_autocheckpoint)
        except (SQLAlchemyError, ValueError, ImportError) as exc:
            raise StoreError(f"database_url: cannot open {_redact(url)}: {exc}") from exc
        self.dialect = self.engine.dialect.name
        if migrate:
            self.upgrade()

    def close(self) -> None:
        self.engine.dispose()

    # -- schema ----------------------------------------------------------------------
    def _alembic(self) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        return cfg

    def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema to ``revision`` (default: the newest)."""
        cfg = self._alembic()
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    # Processes starting together migrate one at a time (held to commit).
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        except SQLAlchemyError as exc:
            raise StoreError(f"database_url: cannot migrate {_redact(self.url)}: {exc}") from exc

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self._alembic()).get_current_head()

    def ping(self) -> None:
        with self._conn() as conn:
            conn.execute(select(1))

    # -- SQLite's write-ahead log ------------------------------------------------------
    @property
    def wal_path(self) -> Path | None:
        """The SQLite database's WAL file; ``None`` for other databases and in memory."""
        u = self.engine.url
        if self.dialect != "sqlite" or u.database in (None, "", ":memory:"):
            return None
        return Path(f"{Path(str(u.database)).expanduser()}-wal")

    def wal_checkpoint(self, mode: str = "PASSIVE") -> WalCheckpoint:
        """Copy the WAL's committed pages into the database file (SQLite only).

        PASSIVE never waits and leaves out pages that readers still need; TRUNCATE (or
        RESTART) waits up to the busy timeout for readers and writers, then empties the
        WAL file. Either way nothing committed is lost: a page not yet copied stays in
        the WAL. Raises :class:`StoreError` if SQLite fails.
        """
        if mode not in _CHECKPOINT_MODES:
            raise ValueError(f"mode: must be one of {', '.join(_CHECKPOINT_MODES)}")
        if self.dialect != "sqlite":
            raise StoreError(f"wal_checkpoint: not a SQLite database ({self.dialect})")
        with self._conn() as conn:
            busy, log_frames, done = conn.exec_driver_sql(
                f"PRAGMA wal_checkpoint({mode})").one()
        return WalCheckpoint(busy=bool(busy), log_frames=int(log_frames),
                             checkpointed_frames=int(done))

    @contextmanager
    def _conn(self, *, write: bool = False) -> Iterator[Connection]:
        try:
            if write:
                with self.engine.begin() as conn:
                    yield conn
            else:
                with self.engine.connect() as conn:
                    yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailableError(
                f"database unavailable: {exc.__class__.__name__}: {exc}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc.__class__.__name__}: {exc}") from exc

    @property
    def _ph(self) -> str:
        return "?" if self.dialect == "sqlite" else "%s"

    def _ts(self, value: datetime) -> Any:
        """A timestamp as the driver takes it (SQLite: SQLAlchemy's naive UTC text)."""
        if self.dialect == "sqlite":
            return _sqlite_ts(value)
        return value

    def _insert(self, table: Any) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    # -- writes ----------------------------------------------------------------------
    def record_decision(
        self,
        *,
        decision_id: str,
        decision: Decision,
        tenant: str,
        user_key: str | None = None,
        kind: str = "policy",
        arm: str | None = None,
        prompt_text: str | None = None,
        task: str | None = None,
        created_at: datetime | None = None,
    ) -> None:
        self.write_batch(
            decisions=[
                PendingDecision(
                    decision_id=decision_id, decision=decision, tenant=tenant,
                    created_at=created_at or utcnow(), user_key=user_key, task=task,
                    kind=kind, arm=arm, prompt_text=prompt_text,
                )
            ]
        )

    def record_outcome(
        self,
        *,
        decision_id: str,
        latency_ms: float | None = None,
        ttft_ms: float | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        tokens_estimated: bool = False,
        cost_usd: float | None = None,
        status: str = "ok",
        error: str | None = None,
    ) -> bool:
        """Store what the call measured; ``False`` when an outcome was already stored."""
        out = OutcomeRecord(
            decision_id=decision_id, created_at=utcnow(), latency_ms=latency_ms,
            ttft_ms=ttft_ms, input_tokens=input_tokens, output_tokens=output_tokens,
            tokens_estimated=tokens_estimated, cost_usd=cost_usd, status=status, error=error,
        )
        result = self.write_batch(outcomes=[out]).outcomes[0]
        if isinstance(result, StoreError):
            raise result
        return result

    def record_feedback(
        self,
        *,
        decision_id: str,
        tenant: str,
        score: float,
        reward: float,
        reward_cost_usd: float,
        reward_latency_ms: float,
        latency_ms: float | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cost_usd: float | None = None,
        source: str | None = None,
    ) -> FeedbackResult:
        """Store feedback once per decision (idempotent).

        The same feedback again returns the stored result with ``duplicate=True``;
        different values raise :class:`FeedbackConflictError`, a decision unknown to
        ``tenant`` raises :class:`UnknownDecisionError`.
        """
        fb = FeedbackInput(
            decision_id=decision_id, tenant=tenant, score=score, reward=reward,
            reward_cost_usd=reward_cost_usd, reward_latency_ms=reward_latency_ms,
            latency_ms=latency_ms, input_tokens=input_tokens, output_tokens=output_tokens,
            cost_usd=cost_usd, source=source,
        )
        result = self.write_batch(feedback=[fb]).feedback[0]
        if isinstance(result, StoreError):
            raise result
        return result

    def write_batch(
        self,
        *,
        decisions: Sequence[PendingDecision] = (),
        outcomes: Sequence[OutcomeRecord] = (),
        feedback: Sequence[FeedbackInput] = (),
        rows: Sequence[Any] = (),
    ) -> BatchResult:
        """Write decisions, then outcomes, then feedback in ONE transaction.

        This is the group commit the service's writer uses: many requests share one
        commit. ``rows`` are decisions encoded already (:meth:`encode_decision`),
        written with ``decisions``. Per-operation client errors (unknown decision,
        conflicting feedback) are returned in place; a database failure raises and
        nothing is written.
        """
        result = BatchResult()
        with self._conn(write=True) as conn:
            rows = [*rows, *map(self.encode_decision, decisions)]
            if rows and self.dialect == "sqlite":
                # The hot path of /v1/route: straight to the driver, values pre-encoded.
                conn.exec_driver_sql(_SQLITE_INSERT_DECISION, rows)
            elif rows:
                conn.execute(self._insert(DecisionRow), rows)
            for start in range(0, len(outcomes), _ROWS_PER_INSERT):
                result.outcomes += self._outcomes_many(
                    conn, outcomes[start:start + _ROWS_PER_INSERT])
            for start in range(0, len(feedback), _FEEDBACK_CHUNK):
                chunk = feedback[start:start + _FEEDBACK_CHUNK]
                result.feedback += self._feedback_many(conn, chunk)
        return result

    def encode_decision(self, p: PendingDecision) -> Any:
        """The ``decisions`` row of ``p`` as :meth:`write_batch` passes it to the driver.

        The service's writer encodes on the request path (~20 us): a batch of hundreds
        of rows encoded at write time would hold the event loop (or, from a thread, the
        GIL) for milliseconds at a time. It then keeps only the row, on SQLite a tuple
        of plain values that Python's cyclic GC stops tracking, instead of the decision
        with its context and actions (tens of tracked objects each).
        """
        return _sqlite_decision_row(p) if self.dialect == "sqlite" else _decision_values(p)

    def _outcomes_many(
        self, conn: Connection, batch: Sequence[OutcomeRecord]
    ) -> list[bool | StoreError]:
        # Two statements for the whole batch, not two per outcome (as _feedback_many).
        # The results are those of storing the outcomes one at a time, in order: the
        # first outcome of a decision wins, a later one (in this batch or not) is False.
        ph = self._ph
        ids = list(dict.fromkeys(out.decision_id for out in batch))
        known = {row[0] for row in conn.exec_driver_sql(
            f"SELECT id FROM decisions WHERE id IN ({', '.join(ph for _ in ids)})",
            tuple(ids),
        )}
        first: dict[str, OutcomeRecord] = {}
        for out in batch:
            if out.decision_id in known:
                first.setdefault(out.decision_id, out)
        stored: set[str] = set()
        if first:
            one = f"({', '.join(ph for _ in _OUTCOME_COLUMNS)})"
            params: list[Any] = []
            for out in first.values():
                params += (out.decision_id, self._ts(out.created_at), out.latency_ms,
                           out.ttft_ms, out.input_tokens, out.output_tokens,
                           out.tokens_estimated, out.cost_usd, out.status, out.error)
            stored = {row[0] for row in conn.exec_driver_sql(
                f"INSERT INTO outcomes ({', '.join(_OUTCOME_COLUMNS)}) VALUES "
                f"{', '.join(one for _ in first)} "
                "ON CONFLICT (decision_id) DO NOTHING RETURNING decision_id",
                tuple(params),
            )}
        result: list[bool | StoreError] = []
        for out in batch:
            if out.decision_id not in known:
                result.append(UnknownDecisionError(out.decision_id))
            else:
                result.append(first.get(out.decision_id) is out and out.decision_id in stored)
        return result

    def _feedback_many(
        self, conn: Connection, batch: Sequence[FeedbackInput]
    ) -> list[FeedbackResult | StoreError]:
        # One statement per step for the whole batch, never one per feedback: each driver
        # call through SQLAlchemy costs ~25 us of Python (GIL held; ~1 us in sqlite3), and
        # two per feedback competed with the event loop under load. The results are those
        # of storing the feedback one at a time, in order: the first of two for one
        # decision wins, the second is a duplicate (or a conflict) of it.
        ph = self._ph
        ids = list(dict.fromkeys(fb.decision_id for fb in batch))
        owners: dict[str, str] = dict(conn.exec_driver_sql(
            f"SELECT id, tenant FROM decisions WHERE id IN ({', '.join(ph for _ in ids)})",
            tuple(ids),
        ).all())
        now = utcnow()
        first: dict[str, FeedbackRecord] = {}  # the batch's first valid feedback per decision
        for fb in batch:
            if owners.get(fb.decision_id) == fb.tenant and fb.decision_id not in first:
                first[fb.decision_id] = _new_feedback(fb, now)
        seqs: dict[str, int] = {}
        if first:
            one = f"({', '.join(ph for _ in _FEEDBACK_COLUMNS)})"
            params: list[Any] = []
            for new_rec in first.values():
                params += (self._ts(now) if c == "created_at" else getattr(new_rec, c)
                           for c in _FEEDBACK_COLUMNS)
            seqs = dict(conn.exec_driver_sql(
                f"INSERT INTO feedback ({', '.join(_FEEDBACK_COLUMNS)}) VALUES "
                f"{', '.join(one for _ in first)} "
                "ON CONFLICT (decision_id) DO NOTHING RETURNING decision_id, seq",
                tuple(params),
            ).all())
        # Stored before this batch: the feedback to compare a repeat with.
        earlier = [d for d in first if d not in seqs]
        stored = {d: replace(r, seq=seqs[d]) for d, r in first.items() if d in seqs}
        replaced: dict[str, tuple[FeedbackRecord, int]] = {}
        if earlier:
            rows = conn.execute(select(FeedbackRow).where(FeedbackRow.decision_id.in_(earlier)))
            stored.update((r.decision_id, _feedback_record(r._mapping)) for r in rows)
            for d in earlier:
                rec = stored.get(d)
                if (rec is not None and rec.grade_id is not None
                        and first[d].grade_id is None and first[d].source != "default"):
                    # A posted score always wins over a grade no one posted: it takes the
                    # grade's place, and a correction step follows the grade's (grades.py).
                    # The gateway's default_quality is no one's score: it never does.
                    stored[d], replaced[d] = self._replace_grade(conn, rec, first[d], now)
        out: list[FeedbackResult | StoreError] = []
        new = set(seqs)
        for fb in batch:
            rec = stored.get(fb.decision_id)
            if owners.get(fb.decision_id) != fb.tenant or rec is None:
                out.append(UnknownDecisionError(fb.decision_id))
            elif fb.decision_id in new:
                new.discard(fb.decision_id)
                out.append(FeedbackResult(rec, duplicate=False))
            elif fb.decision_id in replaced:
                before, correction_id = replaced.pop(fb.decision_id)
                out.append(FeedbackResult(rec, duplicate=False, replaced=before,
                                          correction_id=correction_id))
            else:
                conflict = next((name for name in FeedbackInput.IDENTITY
                                 if not _same(getattr(rec, name), getattr(fb, name))), None)
                out.append(FeedbackResult(rec, duplicate=True) if conflict is None
                           else FeedbackConflictError(fb.decision_id, conflict))
        return out

    def _replace_grade(self, conn: Connection, rec: FeedbackRecord, new: FeedbackRecord,
                       now: datetime) -> tuple[FeedbackRecord, tuple[FeedbackRecord, int]]:
        after = replace(new, seq=rec.seq, created_at=now)
        conn.execute(update(FeedbackRow).where(FeedbackRow.seq == rec.seq).values(
            created_at=now, score=after.score, latency_ms=after.latency_ms,
            input_tokens=after.input_tokens, output_tokens=after.output_tokens,
            cost_usd=after.cost_usd, source=after.source, reward=after.reward,
            reward_cost_usd=after.reward_cost_usd, reward_latency_ms=after.reward_latency_ms,
            grade_id=None))
        conn.execute(update(GradeRow).where(GradeRow.id == rec.grade_id)
                     .values(status="replaced"))
        correction_id = conn.execute(self._insert(CorrectionRow).values(
            feedback_seq=rec.seq, created_at=now, score_before=rec.score,
            reward_before=rec.reward, reward_after=after.reward,
        ).returning(CorrectionRow.id)).scalar_one()
        return after, (rec, int(correction_id))

    # -- reads -----------------------------------------------------------------------
    def get_decision(self, decision_id: str, *, tenant: str | None = None) -> DecisionRecord | None:
        """The decision with its outcome and feedback; ``None`` if unknown to ``tenant``."""
        stmt = select(DecisionRow).where(DecisionRow.id == decision_id)
        if tenant is not None:
            stmt = stmt.where(DecisionRow.tenant == tenant)
        with self._conn() as conn:
            row = conn.execute(stmt).first()
            if row is None:
                return None
            out = conn.execute(select(OutcomeRow).where(OutcomeRow.decision_id == decision_id))
            fb = conn.execute(select(FeedbackRow).where(FeedbackRow.decision_id == decision_id))
            out_row, fb_row = out.first(), fb.first()
            grades = conn.execute(select(GradeRow).where(GradeRow.decision_id == decision_id)
                                  .order_by(GradeRow.id)).all()
            learned = corrected = False
            if fb_row is not None:
                learned = conn.execute(select(LearnLogRow.feedback_seq).where(
                    LearnLogRow.feedback_seq == fb_row.seq)).first() is not None
                corrected = conn.execute(select(CorrectionRow.id).where(
                    CorrectionRow.feedback_seq == fb_row.seq,
                    CorrectionRow.checkpoint_id.is_not(None))).first() is not None
        d = row._mapping
        return DecisionRecord(
            decision_id=d["id"], created_at=d["created_at"], tenant=d["tenant"],
            user_key=d["user_key"], task=d["task"], kind=d["kind"], arm=d["arm"],
            decision=Decision.from_dict(d["payload"]), prompt_text=d["prompt_text"],
            outcome=None if out_row is None else _outcome_record(out_row._mapping),
            feedback=None if fb_row is None else _feedback_record(fb_row._mapping),
            grades=tuple(GradeRecord(**g._mapping) for g in grades),
            learned=learned, corrected=corrected,
        )

    def decision_brief(self, decision_id: str) -> DecisionBrief | None:
        """What feedback on ``decision_id`` needs, or ``None`` if it is unknown.

        For feedback on a decision no longer in the service's memory: one indexed read
        of the decision and one of its outcome, and of the payload only the chosen
        action (no :class:`Decision` is built: ``get_decision`` took 3 statements
        through SQLAlchemy's row processing and rebuilt the whole decision).
        """
        ph = self._ph
        with self._conn() as conn:
            row = conn.exec_driver_sql(
                f"SELECT tenant, kind, payload FROM decisions WHERE id = {ph}", (decision_id,)
            ).first()
            if row is None:
                return None
            out = conn.execute(
                select(OutcomeRow).where(OutcomeRow.decision_id == decision_id)
            ).first()
        tenant, kind, payload = row
        if isinstance(payload, (str, bytes)):  # SQLite: JSON text
            payload = orjson.loads(payload)
        action = payload["actions"][payload["index"]]
        chosen = Chosen(payload["model"], RewardWeights.from_dict(payload["weights"]),
                        float(action["expected_cost_usd"]),
                        float(action["expected_latency_ms"]))
        return DecisionBrief(tenant=tenant, kind=kind, chosen=chosen,
                             outcome=None if out is None else _outcome_record(out._mapping))

    def load_decisions(self, decision_ids: Sequence[str]) -> dict[str, Decision]:
        """The decisions with these ids (those that exist), by id."""
        # Driver SQL and orjson: the learner calls this for every feedback on a decision
        # no longer in memory, and SQLAlchemy's row and JSON processing doubled its cost.
        out: dict[str, Decision] = {}
        ph = self._ph
        with self._conn() as conn:
            for start in range(0, len(decision_ids), 500):
                chunk = tuple(decision_ids[start : start + 500])
                marks = ", ".join(ph for _ in chunk)
                rows = conn.exec_driver_sql(
                    f"SELECT id, payload FROM decisions WHERE id IN ({marks})", chunk
                )
                for decision_id, payload in rows:
                    if isinstance(payload, (str, bytes)):  # SQLite: JSON text
                        payload = orjson.loads(payload)
                    out[decision_id] = Decision.from_dict(payload)
        return out

    def logged(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        tenant: str | None = None,
        kind: str | None = None,
        limit: int | None = None,
    ) -> Iterator[LoggedExample]:
        """Decisions with feedback, oldest first; ``since`` <= decision time < ``until``.

        Streams in chunks, so it is safe on large logs. Filter ``kind="policy"`` for
        off-policy evaluation: forced (pass-through) decisions carry probability 1.
        ``limit`` keeps only the newest ``limit`` of them (read newest first with a
        LIMIT, then returned oldest first), e.g. a snapshot's evaluation window.
        """
        order = (DecisionRow.created_at, DecisionRow.id)
        stmt = (
            select(
                DecisionRow.id, DecisionRow.payload, DecisionRow.created_at, DecisionRow.kind,
                DecisionRow.tenant, FeedbackRow.seq, FeedbackRow.reward, FeedbackRow.score,
                FeedbackRow.reward_cost_usd, FeedbackRow.reward_latency_ms,
            )
            .join(FeedbackRow, FeedbackRow.decision_id == DecisionRow.id)
            .order_by(*(c.desc() for c in order) if limit is not None else order)
        )
        if since is not None:
            stmt = stmt.where(DecisionRow.created_at >= since)
        if until is not None:
            stmt = stmt.where(DecisionRow.created_at < until)
        if tenant is not None:
            stmt = stmt.where(DecisionRow.tenant == tenant)
        if kind is not None:
            stmt = stmt.where(DecisionRow.kind == kind)
        if limit is not None:
            with self._conn() as conn:
                rows = conn.execute(stmt.limit(max(limit, 0))).all()
            yield from (_logged_example(row) for row in reversed(rows))
            return
        with self._conn() as conn:
            for row in conn.execution_options(yield_per=500).execute(stmt):
                yield _logged_example(row)

    def count(self, what: str) -> int:
        """Rows in ``decisions``, ``feedback``, ``outcomes``, ``learn_log`` or
        ``dead_letters``."""
        table = {"decisions": DecisionRow, "feedback": FeedbackRow, "outcomes": OutcomeRow,
                 "learn_log": LearnLogRow, "dead_letters": DeadLetterRow}[what]
        with self._conn() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    # -- records set aside ---------------------------------------------------------------
    def dead_letter(self, *, worker: str, kind: str, ref: str | None, error: str,
                    record: Any) -> None:
        """Set aside a record that ``worker`` could not write or learn, with its error.

        ``record`` is stored as ASCII JSON (values JSON cannot hold as their string), so
        what the database refused in its own columns still fits here.
        """
        text = json.dumps(record, ensure_ascii=True, default=str, sort_keys=True)
        with self._conn(write=True) as conn:
            conn.execute(self._insert(DeadLetterRow).values(
                created_at=utcnow(), worker=worker[:32], kind=kind[:32],
                ref=None if ref is None else _ascii(ref)[:64], error=_ascii(error)[:4000],
                record=text))

    def dead_letters(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The newest records set aside, newest first."""
        with self._conn() as conn:
            rows = conn.execute(select(DeadLetterRow).order_by(DeadLetterRow.id.desc())
                                .limit(limit))
            return [dict(r._mapping) | {"record": json.loads(r.record)} for r in rows]

    # -- learning bookkeeping ----------------------------------------------------------
    def unlearned(self, *, include_forced: bool = True,
                  after_seq: int | None = None) -> Iterator[LearnItem]:
        """Feedback no checkpoint has learned yet, in feedback order (``seq > after_seq``)."""
        stmt = (
            select(
                FeedbackRow.seq, FeedbackRow.reward, FeedbackRow.score, DecisionRow.payload,
                DecisionRow.kind,
                func.coalesce(FeedbackRow.input_tokens, OutcomeRow.input_tokens).label("it"),
                func.coalesce(FeedbackRow.output_tokens, OutcomeRow.output_tokens).label("ot"),
                func.coalesce(FeedbackRow.cost_usd, OutcomeRow.cost_usd).label("cost"),
                func.coalesce(FeedbackRow.latency_ms, OutcomeRow.latency_ms).label("lat"),
            )
            .join(DecisionRow, DecisionRow.id == FeedbackRow.decision_id)
            .outerjoin(OutcomeRow, OutcomeRow.decision_id == FeedbackRow.decision_id)
            .outerjoin(LearnLogRow, LearnLogRow.feedback_seq == FeedbackRow.seq)
            .where(LearnLogRow.feedback_seq.is_(None))
            .order_by(FeedbackRow.seq)
        )
        if after_seq is not None:
            stmt = stmt.where(FeedbackRow.seq > after_seq)
        with self._conn() as conn:
            for row in conn.execution_options(yield_per=500).execute(stmt):
                yield LearnItem(
                    seq=row.seq, decision=Decision.from_dict(row.payload), reward=row.reward,
                    outcome={"quality": row.score, "input_tokens": row.it,
                             "output_tokens": row.ot, "cost_usd": row.cost,
                             "latency_ms": row.lat},
                    kind=row.kind,
                )

    def unlearned_corrections(self) -> Iterator[LearnItem]:
        """Corrections no checkpoint has learned yet, oldest first (feedback/grades.py)."""
        stmt = (
            select(
                CorrectionRow.id, CorrectionRow.feedback_seq, CorrectionRow.score_before,
                CorrectionRow.reward_before, FeedbackRow.reward, FeedbackRow.score,
                DecisionRow.payload, DecisionRow.kind,
                func.coalesce(FeedbackRow.input_tokens, OutcomeRow.input_tokens).label("it"),
                func.coalesce(FeedbackRow.output_tokens, OutcomeRow.output_tokens).label("ot"),
                func.coalesce(FeedbackRow.cost_usd, OutcomeRow.cost_usd).label("cost"),
                func.coalesce(FeedbackRow.latency_ms, OutcomeRow.latency_ms).label("lat"),
            )
            .join(FeedbackRow, FeedbackRow.seq == CorrectionRow.feedback_seq)
            .join(DecisionRow, DecisionRow.id == FeedbackRow.decision_id)
            .outerjoin(OutcomeRow, OutcomeRow.decision_id == FeedbackRow.decision_id)
            .where(CorrectionRow.checkpoint_id.is_(None))
            .order_by(CorrectionRow.id)
        )
        with self._conn() as conn:
            rows = conn.execute(stmt).all()
        for row in rows:
            yield LearnItem(
                seq=row.feedback_seq, decision=Decision.from_dict(row.payload),
                reward=row.reward,
                outcome={"quality": row.score, "input_tokens": row.it,
                         "output_tokens": row.ot, "cost_usd": row.cost,
                         "latency_ms": row.lat},
                kind=row.kind, correction_id=row.id, reward_before=row.reward_before,
                score_before=row.score_before,
            )

    def latest_checkpoint(self) -> Checkpoint | None:
        stmt = (
            select(CheckpointRow).where(CheckpointRow.blob.is_not(None))
            .order_by(CheckpointRow.id.desc()).limit(1)
        )
        with self._conn() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else Checkpoint(**row._mapping)

    def save_checkpoint(
        self,
        *,
        blob: bytes,
        policy_version: str,
        n_learned: int,
        learned: Sequence[tuple[int, str | None]] = (),
        reason: str = "periodic",
        keep: int = 3,
        corrected: Sequence[tuple[int, str | None]] = (),
    ) -> Checkpoint:
        """Save a policy and mark ``learned`` (feedback seq, error or None) as in it.

        Both happen in one transaction: after a crash, exactly the feedback without a
        learn_log row is what the last checkpoint has not learned.
        """
        now = utcnow()
        last = max((seq for seq, _ in learned), default=None)
        with self._conn(write=True) as conn:
            cid = conn.execute(
                self._insert(CheckpointRow).values(
                    created_at=now, reason=reason, policy_version=policy_version,
                    n_learned=n_learned, last_feedback_seq=last, blob=blob,
                ).returning(CheckpointRow.id)
            ).scalar_one()
            if learned:
                conn.execute(
                    self._insert(LearnLogRow),
                    [{"feedback_seq": s, "checkpoint_id": cid, "error": e} for s, e in learned],
                )
            for correction_id, error in corrected:  # a handful at most: grades replaced
                conn.execute(update(CorrectionRow).where(CorrectionRow.id == correction_id)
                             .values(checkpoint_id=cid, error=error))
            if keep > 0:
                old = select(CheckpointRow.id).where(CheckpointRow.blob.is_not(None))
                old = old.order_by(CheckpointRow.id.desc()).offset(keep)
                ids = [r[0] for r in conn.execute(old)]
                if ids:
                    conn.execute(
                        update(CheckpointRow).where(CheckpointRow.id.in_(ids)).values(blob=None)
                    )
        return Checkpoint(id=cid, created_at=now, reason=reason, policy_version=policy_version,
                          n_learned=n_learned, last_feedback_seq=last, blob=blob)

    # -- API keys --------------------------------------------------------------------
    def add_api_key(
        self, *, key_hash: str, prefix: str, tenant: str, admin: bool, label: str | None = None
    ) -> ApiKeyRecord:
        now = utcnow()
        with self._conn(write=True) as conn:
            kid = conn.execute(
                self._insert(ApiKeyRow).values(
                    key_hash=key_hash, prefix=prefix, tenant=tenant, admin=admin, label=label,
                    created_at=now,
                ).returning(ApiKeyRow.id)
            ).scalar_one()
        return ApiKeyRecord(id=kid, prefix=prefix, tenant=tenant, admin=admin, label=label,
                            created_at=now)

    def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The active key with this hash (revoked keys are not found)."""
        stmt = select(ApiKeyRow).where(
            ApiKeyRow.key_hash == key_hash, ApiKeyRow.revoked_at.is_(None)
        )
        with self._conn() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _key_record(row._mapping)

    def api_keys(self) -> list[ApiKeyRecord]:
        with self._conn() as conn:
            rows = conn.execute(select(ApiKeyRow).order_by(ApiKeyRow.id)).all()
        return [_key_record(r._mapping) for r in rows]

    def count_api_keys(self) -> int:
        stmt = select(func.count()).select_from(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None))
        with self._conn() as conn:
            return int(conn.execute(stmt).scalar_one())

    def revoke_api_key(self, prefix: str) -> bool:
        with self._conn(write=True) as conn:
            res = conn.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.prefix == prefix, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return bool(res.rowcount)

    # -- deployment facts ----------------------------------------------------------------
    def meta(self, name: str) -> str | None:
        """The value stored under ``name`` in ``meta``, or ``None``."""
        with self._conn() as conn:
            value = conn.execute(select(MetaRow.value).where(MetaRow.name == name)).scalar()
        return None if value is None else str(value)

    def claim_meta(self, name: str, value: str) -> str:
        """Store ``value`` under ``name`` unless one is stored; return the stored one.

        The first of several processes starting together wins; the others get its value
        (to compare with theirs).
        """
        with self._conn(write=True) as conn:
            conn.execute(self._insert(MetaRow).values(name=name, value=value,
                                                      created_at=utcnow())
                         .on_conflict_do_nothing(index_elements=["name"]))
            stored = conn.execute(select(MetaRow.value).where(MetaRow.name == name)).scalar_one()
        return str(stored)

    # -- run-time catalog changes ------------------------------------------------------
    def catalog_changes(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Models added (spec) or removed (None) at run time, oldest change first."""
        stmt = select(CatalogChangeRow).order_by(CatalogChangeRow.updated_at)
        with self._conn() as conn:
            return [(r.name, r.spec) for r in conn.execute(stmt)]

    def set_catalog_change(self, name: str, spec: Mapping[str, Any] | None) -> None:
        with self._conn(write=True) as conn:
            conn.execute(delete(CatalogChangeRow).where(CatalogChangeRow.name == name))
            conn.execute(
                self._insert(CatalogChangeRow).values(
                    name=name, spec=None if spec is None else dict(spec), updated_at=utcnow()
                )
            )


def _decision_values(p: PendingDecision) -> dict[str, Any]:
    d = p.decision
    payload = d.to_dict()  # once: the columns below reuse its parts
    return {
        "id": p.decision_id, "created_at": p.created_at, "tenant": p.tenant,
        "user_key": p.user_key, "task": p.task, "kind": p.kind, "arm": p.arm,
        "model": d.model, "probability": d.probability, "pmf": payload["pmf"],
        "policy_version": d.policy_version, "feature_version": d.feature_version,
        "weights": payload["weights"], "payload": payload, "prompt_text": p.prompt_text,
    }


_DECISION_COLUMNS = ("id", "created_at", "tenant", "user_key", "task", "kind", "arm", "model",
                     "probability", "pmf", "policy_version", "feature_version", "weights",
                     "payload", "prompt_text")
_OUTCOME_COLUMNS = ("decision_id", "created_at", "latency_ms", "ttft_ms", "input_tokens",
                    "output_tokens", "tokens_estimated", "cost_usd", "status", "error")
_FEEDBACK_COLUMNS = ("decision_id", "tenant", "created_at", "score", "latency_ms",
                     "input_tokens", "output_tokens", "cost_usd", "source", "reward",
                     "reward_cost_usd", "reward_latency_ms", "grade_id")
# Feedback rows per INSERT: 13 parameters each, well under every driver's limit.
_FEEDBACK_CHUNK = 500
_ROWS_PER_INSERT = _FEEDBACK_CHUNK  # outcome rows too (10 parameters each)
_CHECKPOINT_MODES = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")
_SQLITE_INSERT_DECISION = (
    f"INSERT INTO decisions ({', '.join(_DECISION_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _DECISION_COLUMNS)})"
)


def _sqlite_ts(value: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME text (naive UTC, always with microseconds).
    if value.tzinfo is not timezone.utc:  # utcnow()'s are already
        value = value.astimezone(timezone.utc)
    return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _sqlite_decision_row(p: PendingDecision) -> tuple[Any, ...]:
    # Same encodings as SQLAlchemy's SQLite types: naive-UTC ISO text, JSON text. Built
    # directly in _DECISION_COLUMNS' order: this runs on /v1/route's request path.
    d = p.decision
    payload = d.to_dict()
    return (p.decision_id, _sqlite_ts(p.created_at), p.tenant, p.user_key, p.task, p.kind,
            p.arm, d.model, d.probability, _json_dumps(payload["pmf"]), d.policy_version,
            d.feature_version, _json_dumps(payload["weights"]), _json_dumps(payload),
            p.prompt_text)


def _new_feedback(fb: FeedbackInput, now: datetime) -> FeedbackRecord:
    return FeedbackRecord(
        seq=0, decision_id=fb.decision_id, tenant=fb.tenant, created_at=now, score=fb.score,
        reward=fb.reward, reward_cost_usd=fb.reward_cost_usd,
        reward_latency_ms=fb.reward_latency_ms, latency_ms=fb.latency_ms,
        input_tokens=fb.input_tokens, output_tokens=fb.output_tokens, cost_usd=fb.cost_usd,
        source=fb.source, grade_id=fb.grade_id,
    )


def _logged_example(row: Any) -> LoggedExample:
    return LoggedExample(
        decision_id=row.id, decision=Decision.from_dict(row.payload), reward=row.reward,
        quality=row.score, cost_usd=row.reward_cost_usd, latency_ms=row.reward_latency_ms,
        created_at=row.created_at, kind=row.kind, tenant=row.tenant, feedback_seq=row.seq,
    )


def _outcome_record(m: Any) -> OutcomeRecord:
    return OutcomeRecord(**m)


def _feedback_record(m: Any) -> FeedbackRecord:
    return FeedbackRecord(**m)


def _key_record(m: Any) -> ApiKeyRecord:
    return ApiKeyRecord(**{k: v for k, v in m.items() if k != "key_hash"})


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)):
        return math.isclose(a, float(b), rel_tol=1e-12, abs_tol=1e-15)
    return bool(a == b)


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show nothing of it
        return "<unparsable URL>"


_UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")
