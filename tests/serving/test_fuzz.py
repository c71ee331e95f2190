"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis): no 5xx, no hung request,
no half-written row. The real app (SQLite, lifespan, writer, learner) is served by uvicorn
on 127.0.0.1; the number of examples per operation is bounded so the run stays short."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from serving.app import create_app  # noqa: E402
from tests.fakes.server import ServerThread  # noqa: E402
from tests.serving.conftest import service_settings  # noqa: E402

MAX_EXAMPLES = 60
REQUEST_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Path]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    db = tmp / "routebandit.db"
    app = create_app(service_settings(tmp, f"sqlite:///{db}"))
    srv = ServerThread(app)
    srv.start(timeout=30)
    try:
        yield srv, db
    finally:
        srv.stop()


def _operations() -> list[Any]:
    # The schema the app publishes; building the app opens nothing (no lifespan here).
    from serving.settings import load_settings

    app = create_app(load_settings(data_dir="/nonexistent-routebandit-fuzz"))
    schema = schemathesis.openapi.from_dict(app.openapi())
    return [result.ok() for result in schema.get_all_operations()]


OPERATIONS = _operations()
# Valid requests to every operation; invalid ones where there is a body to break (the
# others have nothing schemathesis can make invalid).
CASES = [pytest.param(op, GenerationMode.POSITIVE, id=f"{op.label} valid") for op in OPERATIONS]
CASES += [pytest.param(op, GenerationMode.NEGATIVE, id=f"{op.label} invalid")
          for op in OPERATIONS if len(op.body)]


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_no_server_errors(operation: Any, mode: Any, server: tuple[ServerThread, Path]) -> None:
    srv, _ = server

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        response = case.call(base_url=srv.url, timeout=REQUEST_TIMEOUT_S)
        assert response.status_code < 500, (case.as_curl_command(), response.text)
        if response.status_code >= 400:  # every error says what was wrong
            body = response.json()
            assert body["error"]["message"], body

    run()


def test_no_half_written_rows(server: tuple[ServerThread, Path]) -> None:
    _, db = server
    with sqlite3.connect(db) as conn:
        orphans = {
            "feedback": "SELECT count(*) FROM feedback f LEFT JOIN decisions d "
                        "ON d.id = f.decision_id WHERE d.id IS NULL",
            "outcomes": "SELECT count(*) FROM outcomes o LEFT JOIN decisions d "
                        "ON d.id = o.decision_id WHERE d.id IS NULL",
            "learn_log": "SELECT count(*) FROM learn_log l LEFT JOIN feedback f "
                         "ON f.seq = l.feedback_seq WHERE f.seq IS NULL",
        }
        for table, sql in orphans.items():
            assert conn.execute(sql).fetchone()[0] == 0, table
        bad = conn.execute("SELECT count(*) FROM feedback WHERE score < 0 OR score > 1 "
                           "OR reward != reward").fetchone()[0]
        assert bad == 0
