"""The direct lane (serving/lane.py) answers every request exactly as FastAPI's router
would: the same app with and without it gives the same status and body."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from feedback.store import Store
from serving.app import create_app
from serving.auth import create_key
from serving.lane import DirectLane, lane_routes
from serving.routes import feedback, route
from serving.routes.body import DirectRoute
from serving.settings import Settings
from tests.serving.conftest import service_settings


@pytest.fixture(autouse=True)
def _loopback_upstreams(monkeypatch: pytest.MonkeyPatch) -> None:
    # With API keys (not development mode) only listed non-public upstreams are admitted,
    # and the example catalog's local-qwen is on 127.0.0.1 (docs/deploy.md).
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__UPSTREAM_ALLOW", '["127.0.0.1"]')


def _without_lane(app: FastAPI) -> FastAPI:
    app.user_middleware = [m for m in app.user_middleware if m.cls is not DirectLane]
    return app


@asynccontextmanager
async def _client(settings: Settings, *, lane: bool, key: str | None = None,
                  root_path: str = "") -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    if not lane:
        _without_lane(app)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False,
                                        root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                     headers=headers) as client:
            yield client


def _answer(r: httpx.Response) -> tuple[int, Any]:
    try:
        body: Any = r.json()
    except json.JSONDecodeError:
        body = r.text
    if isinstance(body, dict):
        body.pop("decision_id", None)
    return r.status_code, body


# (method, path, body, content type): good and bad requests to both lane routes
JSON = "application/json"
REQUESTS: list[tuple[str, str, bytes, str | None]] = [
    ("POST", "/v1/route", b'{"prompt": "Reverse a list in Python"}', JSON),
    ("POST", "/v1/route", b'{"messages": [{"role": "user", "content": "hi"}], '
                          b'"weights": {"cost": 0.5}, "metadata": {"task": "t"}}', JSON),
    ("POST", "/v1/route", b"", JSON),
    ("POST", "/v1/route", b"{bad", JSON),
    ("POST", "/v1/route", b'{"prompt": "x"}', "text/plain"),
    ("POST", "/v1/route", b'{"prompt": "x", "extra": 1}', JSON),
    ("POST", "/v1/route", b'{"prompt": 3}', JSON),
    ("POST", "/v1/route", b'{"prompt": "x", "models": ["no-such-model"]}', JSON),
    ("POST", "/v1/route", b'{"prompt": "x", "profile": "no-such-profile"}', JSON),
    ("POST", "/v1/route", b'{"prompt": "x", "weights": {"cost": -1}}', JSON),
    ("POST", "/v1/route", b'{"prompt": "' + b"x" * 3000 + b'"}', JSON),  # over the body limit
    ("POST", "/v1/route", b'{"x": "\xff"}', JSON),
    ("POST", "/v1/feedback", b'{"decision_id": "0" , "score": 0.5}', JSON),
    ("POST", "/v1/feedback", b'{"decision_id": "abc", "score": 2}', JSON),
    ("POST", "/v1/feedback", b'{"decision_id": "abc", "score": "NaN"}', JSON),
    ("POST", "/v1/feedback", b'{"score": 0.5}', JSON),
    ("GET", "/v1/route", b"", None),
    ("PUT", "/v1/feedback", b"{}", JSON),
    ("POST", "/v1/route/", b'{"prompt": "x"}', JSON),
]


@pytest.mark.parametrize("keyed", [False, True], ids=["dev-mode", "api-keys"])
async def test_the_lane_answers_as_the_router_does(tmp_path: Path, db_url: str,
                                                  keyed: bool) -> None:
    answers: dict[bool, list[tuple[int, Any]]] = {}
    for lane in (True, False):  # two services, the same seed: the same decisions
        directory = tmp_path / f"lane-{lane}"
        directory.mkdir()
        # One feature key: on PostgreSQL both services share a database.
        settings = service_settings(directory, _own_db(db_url, directory),
                                    max_body_bytes=2048, feature_key="lane test feature key")
        key = None
        if keyed:
            store = Store(settings.resolved_database_url)
            try:
                key, _ = create_key(store, tenant="acme")
            finally:
                store.close()
        out = answers[lane] = []
        async with _client(settings, lane=lane, key=key) as client:
            for method, path, raw, content_type in REQUESTS:
                headers = {"content-type": content_type} if content_type else {}
                r = await client.request(method, path, content=raw, headers=headers)
                out.append(_answer(r))
            r = await client.post("/v1/route", json={"prompt": "no key"},
                                  headers={"authorization": "Bearer wrong"})
            out.append(_answer(r))
    statuses = [status for status, _ in answers[True]]
    assert statuses[:2] == [200, 200] and 401 in statuses[-1:]
    assert {413, 422, 404, 405}.issubset(statuses)
    assert answers[True] == answers[False]


def _own_db(db_url: str, directory: Path) -> str:
    # SQLite: a file per service; PostgreSQL: the shared test database (each service's
    # decisions are told apart by their ids)
    return f"sqlite:///{directory}/lane.db" if db_url.startswith("sqlite") else db_url


async def test_unhandled_errors_are_500_as_through_the_router(
        tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.service import RouterService

    async def broken(self: RouterService, request: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(RouterService, "route", broken)
    for lane in (True, False):
        async with _client(service_settings(tmp_path, db_url), lane=lane) as client:
            r = await client.post("/v1/route", json={"prompt": "x"})
            assert r.status_code == 500


async def test_a_root_path_goes_through_the_router(tmp_path: Path, db_url: str) -> None:
    settings = service_settings(tmp_path, db_url)
    async with _client(settings, lane=True, root_path="/api") as client:
        r = await client.post("/api/v1/route", json={"prompt": "Reverse a list"})
        assert r.status_code == 200, r.text
        assert r.json()["model"]


@pytest.mark.parametrize("lane", [True, False])
async def test_the_lane_serves_its_routes_and_sets_the_scope(tmp_path: Path, db_url: str,
                                                            lane: bool) -> None:
    seen: list[Scope] = []

    class Spy:  # outermost user middleware: sees the scope the lane fills in
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self.app(scope, receive, send)
            if scope["type"] == "http":
                seen.append(scope)

    app = create_app(service_settings(tmp_path, db_url))
    if not lane:
        _without_lane(app)
    app.add_middleware(Spy)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            r = await client.post("/v1/route", json={"prompt": "Reverse a list"})
            assert r.status_code == 200
    assert seen[-1]["route"].path == "/v1/route"
    assert seen[-1]["endpoint"] is route.route
    # FastAPI's per-route request handler (which the lane skips) leaves its exit stack
    assert ("fastapi_inner_astack" in seen[-1]) is not lane


def test_lane_routes_are_direct_routes_without_path_parameters() -> None:
    found = lane_routes(route.router, feedback.router)
    assert set(found) == {("POST", "/v1/route"), ("POST", "/v1/feedback")}
    assert found[("POST", "/v1/route")].endpoint is route.route

    other = APIRouter(prefix="/p", route_class=DirectRoute)

    async def one(request: Request) -> Response:
        return Response()

    other.add_api_route("/x", one, methods=["POST"])
    other.add_api_route("/x/{n}", one, methods=["POST"])  # a parameter: the router's
    plain = APIRouter()
    plain.add_api_route("/y", one, methods=["POST"])  # not a DirectRoute
    assert set(lane_routes(other, plain)) == {("POST", "/p/x")}
