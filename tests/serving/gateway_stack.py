"""Test harness: fake upstreams, a gateway in front of them, both on real HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi import FastAPI

from bandit import Catalog
from feedback.store import Store
from serving.app import create_app
from serving.auth import create_key
from serving.cooldown import Cooldown
from serving.egress import DEVELOPMENT
from serving.gateway import Gateway, GatewayConfig
from serving.routes import chat, messages, responses
from serving.settings import load_settings
from serving.upstream import Timeouts, Upstream, new_client
from tests.fakes.fake_upstream import Behavior, FakeUpstream, Log
from tests.fakes.server import ServerThread
from tests.fakes.stub_router import StubRouter

# name -> (input price, output price) per million tokens
MODELS = {"cheap": (0.1, 0.4), "mid": (1.0, 4.0), "big": (10.0, 40.0)}
KEY_ENV = "FAKE_UPSTREAM_API_KEY"
KEY = "sk-fake-123"


def catalog_for(fakes: dict[str, FakeUpstream]) -> Catalog:
    return Catalog.from_dict({"models": [
        {"name": name, "base_url": fakes[name].base_url, "api_key_env": KEY_ENV,
         "upstream_model": f"{name}-wire", "input_price": p_in, "output_price": p_out,
         "capabilities": ["json", "tools"]}
        for name, (p_in, p_out) in MODELS.items()
    ]})


def write_catalog_file(path: Path, fakes: dict[str, FakeUpstream]) -> Path:
    """The catalog of ``catalog_for(fakes)`` as the YAML file a service reads."""
    lines = ["models:"]
    for name, (p_in, p_out) in MODELS.items():
        lines.append(f"  - {{name: {name}, base_url: '{fakes[name].base_url}', "
                     f"api_key_env: {KEY_ENV}, upstream_model: {name}-wire, "
                     f"input_price: {p_in}, output_price: {p_out}}}")
    path.write_text("\n".join(lines) + "\n")
    return path


def serve_app(fakes: dict[str, FakeUpstream], tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch, *, with_key: bool,
              **overrides: Any) -> Iterator[tuple[ServerThread, str | None]]:
    """The real app over HTTP in front of ``fakes`` (reset), with an API key for tenant
    ``acme`` or in development mode; yields the server and the key."""
    for fake in fakes.values():
        reset(fake)
    write_catalog_file(tmp_path / "catalog.yaml", fakes)
    monkeypatch.setenv(KEY_ENV, KEY)  # the catalog names this variable for the upstream key
    if with_key:
        # Not development mode: fakes on 127.0.0.1 are admitted only when listed.
        monkeypatch.setenv("ROUTEBANDIT_GATEWAY__UPSTREAM_ALLOW", '["127.0.0.1"]')
    settings = load_settings(catalog=str(tmp_path / "catalog.yaml"), data_dir=str(tmp_path),
                             flush_interval_ms=10, **overrides)
    key: str | None = None
    if with_key:
        store = Store(settings.resolved_database_url)
        key, _ = create_key(store, tenant="acme")
        store.close()
    server = ServerThread(create_app(settings))
    server.start()
    try:
        yield server, key
    finally:
        server.stop()


def reset(fake: FakeUpstream) -> None:
    fresh = Behavior()
    for name in fresh.__dataclass_fields__:
        setattr(fake.behavior, name, getattr(fresh, name))
    for name in Log.__dataclass_fields__:
        getattr(fake.log, name).clear()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Stack:
    fakes: dict[str, FakeUpstream]
    router: StubRouter
    gateway: Gateway
    server: ServerThread
    clock: FakeClock = field(default_factory=FakeClock)
    _sdk: openai.OpenAI | None = None

    def sdk(self) -> openai.OpenAI:
        """The official SDK pointed at the gateway (no SDK retries: we count attempts)."""
        if self._sdk is None:
            self._sdk = openai.OpenAI(base_url=self.base_url, api_key="client-key",
                                      max_retries=0, timeout=10)
        return self._sdk

    def stop(self) -> None:
        if self._sdk is not None:
            self._sdk.close()
        self.server.stop()

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/v1"

    def outcomes(self, decision_id: str, n: int = 1, timeout: float = 5.0) -> list[Any]:
        """The outcomes recorded for a decision, waiting for the background records."""
        wait_until(lambda: len(self.router.outcomes.get(decision_id, [])) >= n, timeout)
        return self.router.outcomes[decision_id]


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def gateway_app(gateway: Gateway, close: Callable[[], Any]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await gateway.aclose()
        await close()

    app = FastAPI(lifespan=lifespan)
    app.state.gateway = gateway
    for door in (chat, responses, messages):
        app.include_router(door.router)
    return app


def start_stack(
    fakes: dict[str, FakeUpstream],
    *,
    config: GatewayConfig | None = None,
    preference: list[str] | None = None,
    timeouts: Timeouts | None = None,
    cooldown: tuple[int, float] = (3, 30.0),
    transport: str = "httpx",
) -> Stack:
    router = StubRouter(catalog_for(fakes), preference=list(preference or []))
    # The fakes are on 127.0.0.1: what development mode admits.
    client = new_client(timeouts=timeouts, transport=transport, egress=DEVELOPMENT)
    clock = FakeClock()
    gateway = Gateway(
        router=router,
        upstream=Upstream(client, env={KEY_ENV: KEY}, egress=DEVELOPMENT, timeouts=timeouts),
        config=config or GatewayConfig(),
        cooldown=Cooldown(failures=cooldown[0], seconds=cooldown[1], clock=clock),
    )
    server = ServerThread(gateway_app(gateway, client.aclose))
    server.start()
    return Stack(fakes=fakes, router=router, gateway=gateway, server=server, clock=clock)


def started_fakes() -> Iterator[dict[str, FakeUpstream]]:
    fakes = {name: FakeUpstream(name=name).start() for name in MODELS}
    try:
        yield fakes
    finally:
        for fake in fakes.values():
            fake.stop()
