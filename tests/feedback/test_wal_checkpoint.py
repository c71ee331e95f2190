"""SQLite's WAL on the service: checkpointed by a thread (feedback/writer.py's
WalCheckpointer), not inside the writer's commits; SQLite's own checkpoint stays armed as a
backstop; TRUNCATE at shutdown; the CLI's stores and PostgreSQL are left as they were."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from feedback.errors import StoreError
from feedback.models import utcnow
from feedback.records import PendingDecision
from feedback.store import WAL_SIZE_LIMIT, Store, WalCheckpoint
from feedback.wal import WAL_BACKSTOP_PAGES, WalCheckpointer
from feedback.writer import BatchWriter
from serving.app import create_app
from tests.feedback.test_store import decide
from tests.serving.conftest import service_settings

MIB = 1024 * 1024
NO_BACKSTOP = 10**9  # pages: SQLite never checkpoints by itself, only the thread does
PROMPT = "x" * 2000  # ~3 KB a row: megabytes of WAL in a fraction of a second


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'routebandit.db'}"


def pendings(n: int) -> list[PendingDecision]:
    d = decide()
    return [PendingDecision(decision_id=uuid.uuid4().hex, decision=d, tenant="acme",
                            created_at=utcnow(), prompt_text=PROMPT) for _ in range(n)]


def pragma(store: Store, name: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql(f"PRAGMA {name}").scalar_one())


def another_connection(path: Path) -> sqlite3.Connection:
    """A connection that has read the database: SQLite checkpoints and removes the WAL when
    the last connection to the file closes, so while this one is open, closing the
    store's does not empty the WAL."""
    conn = sqlite3.connect(path)
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return conn


def count_after_reopening(url: str) -> int:
    store = Store(url)
    try:
        return store.count("decisions")
    finally:
        store.close()


def write_and_watch(store: Store, n_batches: int, size: int = 100) -> tuple[int, int]:
    """Write ``n_batches`` batches; the largest WAL file seen, and the rows written."""
    assert store.wal_path is not None
    largest = 0
    for _ in range(n_batches):
        store.write_batch(decisions=pendings(size))
        largest = max(largest, store.wal_path.stat().st_size)
    return largest, n_batches * size


@contextlib.asynccontextmanager
async def serving(settings: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The real app with its lifespan, over ASGI (as tests/serving/conftest.py's)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield app, client


async def route(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/route", json={"prompt": "How do I reverse a list?"})
    assert r.status_code == 200, r.text


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, mode: str, result: str, seconds: float) -> None:
        assert seconds >= 0
        self.calls.append((mode, result))


async def test_the_thread_checkpoints_the_wal_while_the_writer_writes(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    store = Store(url, wal_autocheckpoint=NO_BACKSTOP)
    assert store.wal_path is not None
    results: list[WalCheckpoint | None] = []
    recorder = Recorder()
    checkpointer = WalCheckpointer(store, interval_s=0.1, max_bytes=MIB // 2, poll_s=0.01,
                                   on_checkpoint=recorder)
    largest = 0

    def on_flush(n_decisions: int, n_ops: int, seconds: float) -> None:
        nonlocal largest
        assert store.wal_path is not None
        largest = max(largest, store.wal_path.stat().st_size)

    writer = BatchWriter(store, flush_interval_s=0.02, on_flush=on_flush)
    assert writer.inline  # SQLite: written on the event loop, as in the service
    checkpointer.start()
    writer.start()
    written = 0
    try:
        for _ in range(40):  # ~4,000 decisions, ~12 MB of WAL frames in all
            for p in pendings(100):
                writer.add_decision(p)
            written += 100
            await asyncio.sleep(0.02)
    finally:
        await writer.stop()
        results.append(checkpointer.stop(final=None))
    assert checkpointer.failures == 0 and checkpointer.checkpoints >= 2
    assert ("PASSIVE", "ok") in recorder.calls
    db_bytes = Path(str(store.engine.url.database)).stat().st_size
    # Without the thread the WAL would hold every frame written (more than the database
    # file); with it, it stays a fraction of that.
    assert db_bytes > 8 * MIB
    assert largest < db_bytes / 2, (largest, db_bytes)
    last = store.wal_checkpoint("PASSIVE")
    assert not last.busy and last.checkpointed_frames == last.log_frames
    store.close()
    assert count_after_reopening(url) == written


def test_shutdown_truncates_the_wal_and_nothing_is_lost(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    store = Store(url, wal_autocheckpoint=NO_BACKSTOP)
    checkpointer = WalCheckpointer(store, interval_s=60)  # only the final checkpoint
    checkpointer.start()
    other = another_connection(tmp_path / "routebandit.db")
    try:
        _, written = write_and_watch(store, 10)
        assert checkpointer.wal_bytes() > MIB
        final = checkpointer.stop()
        assert final is not None and not final.busy
        assert final.checkpointed_frames == final.log_frames
        assert checkpointer.wal_bytes() == 0
        assert not checkpointer.running
        store.close()
        assert other.execute("SELECT count(*) FROM decisions").fetchone()[0] == written
    finally:
        other.close()
    assert count_after_reopening(url) == written


def test_the_file_size_triggers_a_checkpoint_before_the_interval(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path), wal_autocheckpoint=NO_BACKSTOP)
    checkpointer = WalCheckpointer(store, interval_s=60, max_bytes=MIB, poll_s=0.01)
    checkpointer.start()
    try:
        store.write_batch(decisions=pendings(600))  # ~2 MB in one transaction
        deadline = time.monotonic() + 5
        while checkpointer.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.checkpoints >= 1  # long before 60 s
        # The file keeps its size until a writer starts it over: a big WAL that nothing
        # wrote to since is not checkpointed again at every poll.
        assert checkpointer.wal_bytes() > MIB
        done = checkpointer.checkpoints
        time.sleep(0.3)  # 30 polls
        assert checkpointer.checkpoints == done
        store.write_batch(decisions=pendings(600))  # written again: checkpointed again
        deadline = time.monotonic() + 5
        while checkpointer.checkpoints == done and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.checkpoints > done
    finally:
        checkpointer.stop(final=None)
        store.close()


class FlakyStore(Store):
    """A store whose first checkpoints fail (as on a full disk), then succeed."""

    failures_left = 2

    def wal_checkpoint(self, mode: str = "PASSIVE") -> WalCheckpoint:
        if self.failures_left:
            self.failures_left -= 1
            raise StoreError("database error: OperationalError: disk I/O error")
        return super().wal_checkpoint(mode)


def test_a_failed_checkpoint_is_logged_counted_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = sqlite_url(tmp_path)
    store = FlakyStore(url, wal_autocheckpoint=NO_BACKSTOP)
    recorder = Recorder()
    checkpointer = WalCheckpointer(store, interval_s=0.05, poll_s=0.01, on_checkpoint=recorder)
    with caplog.at_level(logging.ERROR, logger="feedback.writer"):
        checkpointer.start()
        try:
            _, written = write_and_watch(store, 3)
            deadline = time.monotonic() + 5
            while ("PASSIVE", "ok") not in recorder.calls and time.monotonic() < deadline:
                time.sleep(0.01)
            assert checkpointer.running  # it carried on
        finally:
            checkpointer.stop(final=None)
    assert recorder.calls[:3] == [("PASSIVE", "error"), ("PASSIVE", "error"),
                                  ("PASSIVE", "ok")]
    assert checkpointer.failures == 2 and "disk I/O error" in (checkpointer.last_error or "")
    failed = [r for r in caplog.records if "WAL checkpoint (PASSIVE)" in r.getMessage()]
    assert len(failed) == 2 and all(r.levelno == logging.ERROR for r in failed)
    store.close()
    assert count_after_reopening(url) == written


def test_if_the_thread_dies_sqlites_backstop_bounds_the_wal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = sqlite_url(tmp_path)
    store = Store(url, wal_autocheckpoint=64)  # a small backstop, to see it work

    def broken_metrics(mode: str, result: str, seconds: float) -> None:
        raise RuntimeError("a bug in the metrics callback")

    checkpointer = WalCheckpointer(store, interval_s=0.01, poll_s=0.01,
                                   on_checkpoint=broken_metrics)
    with caplog.at_level(logging.ERROR, logger="feedback.writer"):
        checkpointer.start()
        deadline = time.monotonic() + 5
        while checkpointer.running and time.monotonic() < deadline:
            time.sleep(0.01)
    assert not checkpointer.running and checkpointer.failures == 1
    assert "RuntimeError" in (checkpointer.last_error or "")
    assert any("checkpoint thread" in r.getMessage() and r.exc_info for r in caplog.records)
    largest, written = write_and_watch(store, 20)  # ~6 MB of frames
    assert largest < 2 * MIB, largest  # 64 pages, plus the transaction that passed them
    checkpointer.stop(final=None)
    store.close()
    assert count_after_reopening(url) == written


def test_cli_stores_keep_sqlites_automatic_checkpoint(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    cli = Store(url)
    service = Store(url, wal_autocheckpoint=WAL_BACKSTOP_PAGES)
    try:
        assert pragma(cli, "wal_autocheckpoint") == 1000  # SQLite's default
        assert pragma(cli, "journal_size_limit") == -1
        assert pragma(service, "wal_autocheckpoint") == WAL_BACKSTOP_PAGES
        assert pragma(service, "journal_size_limit") == WAL_SIZE_LIMIT
    finally:
        cli.close()
        service.close()


def test_only_sqlite_files_have_a_wal(db_url: str) -> None:
    store = Store(db_url, wal_autocheckpoint=WAL_BACKSTOP_PAGES)  # ignored by PostgreSQL
    memory = Store("sqlite://")
    try:
        assert memory.wal_path is None
        with pytest.raises(ValueError, match="not a SQLite file"):
            WalCheckpointer(memory)
        if store.dialect == "sqlite":
            assert store.wal_path == Path(f"{store.engine.url.database}-wal")
            return
        assert store.wal_path is None
        with pytest.raises(StoreError, match="not a SQLite database"):
            store.wal_checkpoint()
        with pytest.raises(ValueError, match="not a SQLite file"):
            WalCheckpointer(store)
    finally:
        store.close()
        memory.close()


async def test_the_service_checkpoints_in_a_thread_and_truncates_at_shutdown(
    tmp_path: Path, db_url: str
) -> None:
    settings = service_settings(tmp_path, db_url, wal_checkpoint_interval_s=0.05)
    sqlite = db_url.startswith("sqlite")
    other = None
    n = 30
    try:
        async with serving(settings) as (app, client):
            if sqlite:
                other = another_connection(tmp_path / "routebandit.db")
            store = app.state.service.store
            checkpointer = getattr(app.state, "wal_checkpointer", None)
            for _ in range(n):
                await route(client)
            if not sqlite:  # PostgreSQL: nothing of this
                assert checkpointer is None and store.wal_path is None
                return
            assert isinstance(checkpointer, WalCheckpointer) and checkpointer.running
            assert pragma(store, "wal_autocheckpoint") == WAL_BACKSTOP_PAGES
            deadline = time.monotonic() + 5
            while checkpointer.checkpoints == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            metrics = (await client.get("/metrics")).text
            assert 'routebandit_wal_checkpoints_total{mode="PASSIVE",result="ok"}' in metrics
            await app.state.service.writer.flush()
            assert checkpointer.wal_bytes() > 0
        assert not checkpointer.running
        assert checkpointer.wal_bytes() == 0  # TRUNCATE at shutdown
        assert checkpointer.failures == 0
    finally:
        if other is not None:
            other.close()
    assert count_after_reopening(db_url) == n


async def test_the_service_can_leave_checkpoints_to_sqlite(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, sqlite_url(tmp_path), wal_checkpoint_interval_s=0)
    async with serving(settings) as (app, client):
        await route(client)
        store = app.state.service.store
        assert store.wal_autocheckpoint is None and pragma(store, "wal_autocheckpoint") == 1000
        assert not hasattr(app.state, "wal_checkpointer")
        # The counter is declared (HELP, TYPE) but counts nothing.
        assert "routebandit_wal_checkpoints_total{" not in (await client.get("/metrics")).text
