"""Checkpoint a SQLite store's write-ahead log from a thread (:class:`WalCheckpointer`).

SQLite's automatic checkpoint copies the WAL into the database file inside the commit
that takes the WAL past ``wal_autocheckpoint`` pages: on the service, a transaction on
the event loop, during which every request waits. The service instead raises that
threshold to a backstop (:data:`WAL_BACKSTOP_PAGES`) and checkpoints from a thread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from feedback.errors import StoreError
from feedback.store import WAL_SIZE_LIMIT, Store, WalCheckpoint

log = logging.getLogger(__name__)

#: SQLite's own automatic checkpoint stays armed on the service's connections at this
#: many WAL pages (16 MiB at the default 4 KiB page), four times what the checkpoint
#: thread lets the WAL reach. Why a backstop rather than ``wal_autocheckpoint=0`` plus
#: detecting that the thread died: the bound then holds whatever happens to the thread
#: (an exception, a hang in a slow fsync, falling behind, never started) with nothing
#: to detect or signal across threads, and it costs nothing while the thread keeps up,
#: since SQLite only checkpoints on commit once the WAL holds this many pages.
WAL_BACKSTOP_PAGES = 4096


class WalCheckpointer:
    """Checkpoint a SQLite store's WAL from a thread, not inside the writer's commits.

    SQLite's automatic checkpoint runs in the commit that takes the WAL past 1,000 pages:
    on the service, a transaction on the event loop, and every request waits for the
    copy. Here a thread runs ``PRAGMA wal_checkpoint(PASSIVE)`` every ``interval_s``, or
    sooner once the WAL file exceeds ``max_bytes`` (one ``stat`` per ``poll_s``), on its
    own pooled connection; sqlite3 drops the GIL while it copies pages and syncs.
    :meth:`stop` ends with a TRUNCATE checkpoint, which empties the WAL file. Open the
    store with ``wal_autocheckpoint=WAL_BACKSTOP_PAGES`` (see there) so that the WAL
    stays bounded even if this thread stops.

    ``on_checkpoint(mode, result, seconds)`` is called after every checkpoint, from the
    thread, with ``"ok"``, ``"busy"`` or ``"error"`` (for metrics).
    """

    def __init__(
        self,
        store: Store,
        *,
        interval_s: float = 1.0,
        max_bytes: int = WAL_SIZE_LIMIT,
        poll_s: float = 0.1,
        on_checkpoint: Any = None,
    ) -> None:
        wal = store.wal_path
        if wal is None:
            raise ValueError("WalCheckpointer: the store is not a SQLite file")
        if interval_s <= 0 or poll_s <= 0 or max_bytes <= 0:
            raise ValueError("interval_s, poll_s and max_bytes: must be positive")
        self.store = store
        self.wal = wal
        self.interval_s = interval_s
        self.max_bytes = max_bytes
        self.poll_s = min(poll_s, interval_s)
        self.on_checkpoint = on_checkpoint
        self.checkpoints = 0  # PASSIVE checkpoints that ran (ok or busy)
        self.failures = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="routebandit-wal-checkpoint",
                                        daemon=True)
        self._thread.start()

    def stop(self, *, final: str | None = "TRUNCATE") -> WalCheckpoint | None:
        """Stop the thread, then run a ``final`` checkpoint (blocks: call it in a thread).

        Call it once the writer has stopped: TRUNCATE waits up to the store's busy
        timeout for readers and writers still in the WAL.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self.checkpoint(final) if final is not None else None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wal_bytes(self) -> int:
        return self._stat()[0]

    def _stat(self) -> tuple[int, int]:
        """The WAL file's size and modification time (ns)."""
        try:
            st = self.wal.stat()
        except FileNotFoundError:  # no connection open: SQLite removed it
            return 0, 0
        return st.st_size, st.st_mtime_ns

    def checkpoint(self, mode: str = "PASSIVE") -> WalCheckpoint | None:
        """One checkpoint; a failure is logged, counted and reported, and ``None``.

        A failed checkpoint loses nothing (the pages stay in the WAL) and the next one
        retries, so the thread carries on rather than dying on, say, a full disk.
        """
        started = time.perf_counter()
        try:
            result = self.store.wal_checkpoint(mode)
        except StoreError as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.error("WAL checkpoint (%s) of %s failed (nothing is lost, the pages stay "
                      "in the WAL; retried in %.1f s): %s", mode, self.wal, self.interval_s,
                      exc)
            self._report(mode, "error", started)
            return None
        if result.busy and mode != "PASSIVE":
            log.warning("WAL checkpoint (%s) of %s was blocked by another connection: "
                        "%d of %d frames copied, the WAL file stays", mode, self.wal,
                        result.checkpointed_frames, result.log_frames)
        self._report(mode, "busy" if result.busy else "ok", started)
        return result

    def _report(self, mode: str, outcome: str, started: float) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint(mode, outcome, time.perf_counter() - started)

    def _run(self) -> None:
        last, written = time.monotonic(), -1
        try:
            while not self._stop.wait(self.poll_s):
                due = time.monotonic() - last >= self.interval_s
                if not due:
                    # Early only for a WAL that is too big and was written since the
                    # last checkpoint: the file keeps its size after a checkpoint until
                    # a writer starts over from its beginning.
                    size, mtime = self._stat()
                    if size <= self.max_bytes or mtime == written:
                        continue
                if self.checkpoint("PASSIVE") is not None:
                    self.checkpoints += 1
                last, written = time.monotonic(), self._stat()[1]
        except Exception as exc:
            # The thread's top level: nothing above it to raise to. The WAL stays bounded
            # by SQLite's own checkpoint (the store's wal_autocheckpoint, the backstop;
            # then in the writer's commits, as without this thread): say so loudly.
            self.failures += 1
            self.last_error = f"{exc.__class__.__name__}: {exc}"
            log.exception("the WAL checkpoint thread of %s stopped; SQLite's automatic "
                          "checkpoint bounds the WAL from now on", self.wal)


__all__ = ["WAL_BACKSTOP_PAGES", "WalCheckpointer"]
