"""Connections for the stats, with driver errors translated as the store translates them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import (
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from feedback.errors import StoreError, StoreUnavailableError

_UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)


@contextmanager
def connection(engine: Engine, *, write: bool = False, tune: bool = True
               ) -> Iterator[Connection]:
    """A connection (in a transaction committed at the end when ``write``); raises
    :class:`StoreUnavailableError` or :class:`StoreError`."""
    try:
        if write:
            with engine.begin() as conn:
                if tune:
                    _tune(conn)
                yield conn
        else:
            with engine.connect() as conn:
                if tune:
                    _tune(conn)
                yield conn
    except _UNAVAILABLE as exc:
        raise StoreUnavailableError(
            f"database unavailable: {exc.__class__.__name__}: {exc}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"database error: {exc.__class__.__name__}: {exc}") from exc


def _tune(conn: Connection) -> None:
    # PostgreSQL compiles a query with LLVM once its estimated cost passes jit_above_cost:
    # ~90 ms for an aggregation that runs in tens (measured on the stats' roll-up builds).
    # For this transaction only (the connection goes back to the pool as it came).
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL jit = off")


__all__ = ["connection"]
