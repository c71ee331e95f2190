"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis): no 5xx, no hung request,
no half-written row. The real app (SQLite, lifespan, writer, learner) is served by uvicorn
on 127.0.0.1; the number of examples per operation is bounded so the run stays short."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

import httpx  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from serving.app import create_app  # noqa: E402
from tests.fakes.fake_upstream import FakeUpstream  # noqa: E402
from tests.fakes.serve_process import KEY_ENV, write_catalog  # noqa: E402
from tests.fakes.server import ServerThread  # noqa: E402
from tests.serving.conftest import service_settings  # noqa: E402

MAX_EXAMPLES = 60
REQUEST_TIMEOUT_S = 10.0


@contextlib.contextmanager
def _serve(tmp: Path) -> Iterator[tuple[ServerThread, Path]]:
    db = tmp / "routebandit.db"
    with FakeUpstream() as upstream, pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, "sk-fake")  # chat calls go to the fake on 127.0.0.1
        catalog = write_catalog(tmp / "catalog.yaml", upstream.base_url)
        app = create_app(service_settings(tmp, f"sqlite:///{db}", catalog=str(catalog)))
        srv = ServerThread(app)
        srv.start(timeout=30)
        try:
            yield srv, db
        finally:
            srv.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Path]]:
    with _serve(tmp_path_factory.mktemp("fuzz")) as served:
        yield served


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Path]]:
    # Its own server: the schema fuzz adds models at run time (POST /v1/models) whose
    # API keys are not set, and a chat routed to one of those is rightly a 502.
    with _serve(tmp_path_factory.mktemp("fuzz-chat")) as served:
        yield served


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


# The chat endpoint takes OpenAI's schema, which the app does not publish: its bodies
# come from Hypothesis instead, valid-looking and not.
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=12,
)
_message = st.fixed_dictionaries({
    "role": st.sampled_from(["user", "system", "assistant", "tool", "developer", "robot"]),
    "content": st.text(max_size=50) | _json})
CHAT_BODIES = st.fixed_dictionaries(
    {"model": st.sampled_from(["auto", "auto:cheap", "cheap", "big", "nope"]) | _json,
     "messages": st.lists(_message, max_size=3) | _json},
    optional={"stream": st.booleans(), "temperature": _json, "max_tokens": _json,
              "n": _json, "tools": _json, "response_format": _json, "routebandit": _json,
              "stream_options": _json, "user": _json},
)


def test_chat_never_5xx(chat_server: tuple[ServerThread, Path]) -> None:
    srv, _ = chat_server

    @given(body=CHAT_BODIES)
    @settings(max_examples=MAX_EXAMPLES * 2, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(body: dict[str, Any]) -> None:
        r = httpx.post(f"{srv.url}/v1/chat/completions", json=body, timeout=REQUEST_TIMEOUT_S)
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            assert r.json()["error"]["message"], r.text

    run()


@pytest.mark.parametrize("which", ["server", "chat_server"])
def test_no_half_written_rows(which: str, request: pytest.FixtureRequest) -> None:
    _, db = request.getfixturevalue(which)
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
