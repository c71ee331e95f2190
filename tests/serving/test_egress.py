"""Upstream egress (serving/egress.py): where the gateway may connect and which variables
may hold upstream keys, at registration, at start-up and on every connection.

Addresses that must never be reached stand in as a listener on 127.0.0.2 (loopback: this
machine cannot bind 169.254.x), with the service out of development mode so loopback is
refused; names resolve through an injected resolver, so a test decides what they are.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bandit import ModelSpec
from bandit.catalog import Catalog
from bandit.errors import CatalogError
from feedback.store import Store
from serving.aiohttp_transport import AiohttpTransport
from serving.app import create_app, preflight
from serving.auth import create_key
from serving.egress import (
    DEVELOPMENT,
    EgressError,
    EgressPolicy,
    classify,
    parse_allow,
)
from serving.service import apply_changes
from serving.settings import Settings, SettingsError
from serving.upstream import (
    Upstream,
    UpstreamConfigError,
    UpstreamError,
    UpstreamRefused,
    new_client,
)
from tests.serving.conftest import service_settings

PUBLIC = "93.184.216.34"  # a global address; nothing here ever connects to it
FORBIDDEN = "127.0.0.2"
MESSAGES = [{"role": "user", "content": "hi"}]
PLANTED = "sk-planted-do-not-leak-4242"

_ip = ipaddress.ip_address


# -- the pure policy -------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "169.254.169.254", "10.1.2.3", "172.16.0.1", "192.168.1.1", "127.0.0.1", "::1",
    "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1", "0.0.0.0", "100.100.100.200",
    "224.0.0.1", "::", "64:ff9b::a9fe:a9fe",
], ids=["metadata", "10/8", "172.16/12", "192.168/16", "loopback", "v6-loopback",
        "v6-link-local", "metadata-v6", "v4-mapped-loopback", "unspecified",
        "metadata-alibaba", "multicast", "v6-unspecified", "nat64-metadata"])
def test_non_global_addresses_are_refused(address: str) -> None:
    assert classify(_ip(address)) is not None
    with pytest.raises(EgressError, match="upstream_allow"):
        EgressPolicy().check_address(_ip(address), address)


@pytest.mark.parametrize("address", ["8.8.8.8", PUBLIC, "2606:4700:4700::1111"],
                         ids=["v4", "v4-other", "v6"])
def test_public_addresses_are_admitted(address: str) -> None:
    assert classify(_ip(address)) is None
    EgressPolicy().check_address(_ip(address), address)


@pytest.mark.parametrize(("allow", "address", "host", "admitted"), [
    (["10.0.0.0/8"], "10.9.8.7", "10.9.8.7", True),
    (["10.0.0.0/8"], "192.168.1.1", "192.168.1.1", False),
    (["vllm.internal"], "10.9.8.7", "vllm.internal", True),
    (["vllm.internal"], "10.9.8.7", "other.internal", False),
    (["fd00::/8"], "fd12::1", "fd12::1", True),
    (["169.254.0.0/16"], "169.254.169.254", "169.254.169.254", False),
    (["169.254.169.254"], "169.254.169.254", "169.254.169.254", True),
    (["0.0.0.0/0"], "100.100.100.200", "100.100.100.200", False),
], ids=["cidr", "cidr-other", "host", "host-other", "v6-cidr",
        "metadata-not-through-a-network", "metadata-listed-exactly", "metadata-not-any"])
def test_the_allow_list_admits(allow: list[str], address: str, host: str,
                               admitted: bool) -> None:
    policy = EgressPolicy(allow=parse_allow(allow))
    assert (policy.refusal(_ip(address), host) is None) is admitted


def test_development_mode_admits_loopback_only() -> None:
    for address in ("127.0.0.1", FORBIDDEN, "::1", "::ffff:127.0.0.1"):
        assert DEVELOPMENT.refusal(_ip(address), address) is None
    for address in ("169.254.169.254", "10.0.0.1", "0.0.0.0"):
        assert DEVELOPMENT.refusal(_ip(address), address) is not None


@pytest.mark.parametrize("entry", ["not a host", "-bad.example", "10.0.0.0/33", ""],
                         ids=["space", "leading-dash", "bad-prefix", "empty"])
def test_bad_allow_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="neither a host name"):
        parse_allow([entry])


def test_registration_waits_for_a_slow_resolver_no_longer_than_its_timeout() -> None:
    # A resolver that hangs (no DNS server answering) must not stall start-up or
    # POST /v1/models: past the timeout the name counts as not resolving now.
    release = threading.Event()

    def hangs(host: str, port: int) -> list[str]:
        release.wait(10)
        return ["93.184.216.34"]

    policy = EgressPolicy(resolver=hangs, resolve_timeout_s=0.2)
    started = time.monotonic()
    policy.check_url("https://api.example.com/v1", resolve=True)
    assert time.monotonic() - started < 1.0
    release.set()


def test_settings_validate_and_build_the_policy(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    from serving.gateway_settings import egress_policy
    from serving.settings import load_settings

    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__UPSTREAM_ALLOW", '["10.0.0.0/8", "vllm.lan"]')
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__API_KEY_ENVS", '["LLM_*"]')
    settings = load_settings(data_dir=str(tmp_path))
    policy = egress_policy(settings.gateway, development=False, database_url=None)
    assert policy.refusal(_ip("10.1.1.1"), "10.1.1.1") is None
    assert policy.key("LLM_KEY", {"LLM_KEY": "k"}) == "k"
    with pytest.raises(EgressError, match="matches none of LLM_"):
        policy.key("OPENAI_API_KEY", {})
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__UPSTREAM_ALLOW", '["not a host"]')
    with pytest.raises(SettingsError, match="GATEWAY__UPSTREAM_ALLOW.*neither a host name"):
        load_settings(data_dir=str(tmp_path))


@pytest.mark.parametrize(("name", "patterns", "rule"), [
    ("ROUTEBANDIT_DATABASE_URL", ("*",), "starts with ROUTEBANDIT_"),
    ("routebandit_database_url", ("*",), "starts with ROUTEBANDIT_"),
    ("HOME", ("*_API_KEY", "*_TOKEN"), "matches none of"),
    ("OPENAI_API_KEY_FILE", ("*_API_KEY", "*_TOKEN"), "matches none of"),
], ids=["reserved-whatever-the-patterns", "reserved-any-case", "not-a-key", "suffix"])
def test_key_variables_only_from_names_meant_for_them(
    name: str, patterns: tuple[str, ...], rule: str
) -> None:
    with pytest.raises(EgressError, match=rule) as info:
        EgressPolicy(key_envs=patterns).key(name, {name: PLANTED})
    assert "api_key_envs" in str(info.value) and PLANTED not in str(info.value)


def test_a_variable_holding_the_database_url_is_never_a_key() -> None:
    policy = EgressPolicy(database_url=PLANTED)
    with pytest.raises(EgressError, match="holds the database URL") as info:
        policy.key("OTHER_API_KEY", {"OTHER_API_KEY": PLANTED})
    assert PLANTED not in str(info.value) and PLANTED not in repr(policy)
    assert policy.key("OPENAI_API_KEY", {"OPENAI_API_KEY": "sk-1"}) == "sk-1"


@pytest.mark.parametrize(("url", "rule"), [
    ("ftp://example.com/v1", "scheme must be http or https"),
    ("http://169.254.169.254/latest", "cloud metadata"),
    ("http://[::ffff:169.254.169.254]/latest", "cloud metadata"),
    ("http://[fd00:ec2::254]/latest", "cloud metadata"),
    ("http://user:pw@10.0.0.1:8080/v1", "private"),
], ids=["scheme", "metadata", "mapped-metadata", "metadata-v6", "userinfo"])
def test_urls_are_checked(url: str, rule: str) -> None:
    with pytest.raises(EgressError, match=rule) as info:
        EgressPolicy().check_url(url)
    assert "pw" not in str(info.value)


def test_registration_checks_every_address_a_name_resolves_to() -> None:
    names = Names({"mixed.test": [PUBLIC, "10.0.0.1"], "public.test": [PUBLIC]})
    policy = EgressPolicy(resolver=names)
    with pytest.raises(EgressError, match=r"mixed.test \(10.0.0.1\) is a private address"):
        policy.check_url("https://mixed.test/v1", resolve=True)
    policy.check_url("https://public.test/v1", resolve=True)
    policy.check_url("https://api.openai.com/v1", resolve=True)  # does not resolve: later
    assert names.calls == ["mixed.test", "public.test", "api.openai.com"]


def test_refused_stored_changes_are_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    catalog = Catalog.from_dict({"models": [{"name": "a"}]})
    changes = [("evil", {"name": "evil", "base_url": "http://169.254.169.254/latest",
                         "api_key_env": "OPENAI_API_KEY"}),
               ("leak", {"name": "leak", "api_key_env": "ROUTEBANDIT_DATABASE_URL"}),
               ("fine", {"name": "fine", "base_url": "https://api.openai.com/v1"})]
    policy = EgressPolicy(resolver=Names({}))

    def vet(spec: ModelSpec, where: str) -> None:
        policy.check_model(spec, where, env={})

    with caplog.at_level(logging.WARNING, logger="routebandit.service"):
        out = apply_changes(catalog, changes, vet=vet)
    assert out.names == ("a", "fine")
    warned = [r.getMessage() for r in caplog.records]
    assert any("catalog_changes[evil].base_url" in m and "cloud metadata" in m
               for m in warned)
    assert any("catalog_changes[leak].api_key_env" in m for m in warned)


# -- helpers ---------------------------------------------------------------------------

class Names:
    """An injected resolver: what each name resolves to now (others do not resolve)."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.names[host]


class Listener:
    """A TCP server counting the connections it accepts; with ``reply``, it reads one
    request and answers it with those bytes."""

    def __init__(self, host: str = FORBIDDEN, reply: bytes | None = None) -> None:
        self._sock = socket.socket()
        self._sock.bind((host, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self.accepted = 0
        self._reply = reply
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.accepted += 1
            with conn:
                if self._reply is not None:
                    conn.settimeout(2)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    conn.sendall(self._reply)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def _redirect_to(url: str) -> bytes:
    return (f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {url}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\n"
            "Connection: close\r\n\r\n{}").encode()


TRANSPORTS = pytest.mark.parametrize("transport", ["httpx", "aiohttp"])


# -- the upstream client: at call time, on the address connected to ---------------------

@TRANSPORTS
async def test_dns_rebinding_is_refused_at_call_time(
    transport: str, listener: Listener, caplog: pytest.LogCaptureFixture,
) -> None:
    names = Names({"rebind.test": [PUBLIC]})
    policy = EgressPolicy(resolver=names)
    env = {"REBIND_API_KEY": PLANTED}
    spec = ModelSpec(name="m", base_url=f"http://rebind.test:{listener.port}/v1",
                     api_key_env="REBIND_API_KEY")
    policy.check_model(spec, "model", env=env)  # registration: a public address
    names.names["rebind.test"] = [FORBIDDEN]  # ...and then the name moves
    client = new_client(transport=transport, egress=policy)
    up = Upstream(client, env=env, egress=policy)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(UpstreamRefused, match="loopback address") as info:
            await up.complete(spec, {"messages": MESSAGES})
        assert isinstance(info.value, UpstreamError) and info.value.kind == "egress_refused"
        assert "upstream_allow" in str(info.value)
        names.names["rebind.test"] = [PUBLIC, FORBIDDEN]  # one bad address is enough
        with pytest.raises(UpstreamRefused):
            async with up.stream(spec, {"messages": MESSAGES, "stream": True}):
                pass
    finally:
        await client.aclose()
    assert listener.accepted == 0
    assert names.calls.count("rebind.test") >= 3  # checked again at each call
    assert PLANTED not in str(info.value) and PLANTED not in caplog.text


@TRANSPORTS
async def test_a_literal_forbidden_address_is_never_connected(
    transport: str, listener: Listener,
) -> None:
    url = f"http://{FORBIDDEN}:{listener.port}/v1/chat/completions"
    client = new_client(transport=transport, egress=EgressPolicy())
    try:  # the transports alone (no Upstream in front) refuse it too
        with pytest.raises(EgressError, match="loopback"):
            await client.post(url, json={})
        if transport == "aiohttp":
            engine: AiohttpTransport = client.engine  # type: ignore[attr-defined]
            with pytest.raises(EgressError, match="loopback"):
                await engine.send("POST", url, headers={}, content=b"{}",
                                  timeout=httpx.Timeout(5.0))
        up = Upstream(client, env={}, egress=EgressPolicy())
        spec = ModelSpec(name="m", base_url=f"http://{FORBIDDEN}:{listener.port}/v1")
        with pytest.raises(UpstreamRefused):
            await up.complete(spec, {})
    finally:
        await client.aclose()
    assert listener.accepted == 0


@TRANSPORTS
async def test_redirects_are_not_followed(transport: str, listener: Listener) -> None:
    # Development mode's policy admits both loopback addresses: only not following the
    # redirect keeps the second listener at zero.
    target = f"http://{FORBIDDEN}:{listener.port}/v1/chat/completions"
    redirector = Listener("127.0.0.1", reply=_redirect_to(target))
    client = new_client(transport=transport, egress=DEVELOPMENT)
    spec = ModelSpec(name="m", base_url=f"http://127.0.0.1:{redirector.port}/v1")
    try:
        out = await Upstream(client, env={}, egress=DEVELOPMENT).complete(spec, {})
        assert out.status_code == 307
        resp = await client.post(target.replace(f"{FORBIDDEN}:{listener.port}",
                                                f"127.0.0.1:{redirector.port}"), json={})
        assert resp.status_code == 307
    finally:
        await client.aclose()
        redirector.close()
    assert redirector.accepted == 2 and listener.accepted == 0


@pytest.mark.parametrize(("name", "env"), [
    ("ROUTEBANDIT_DATABASE_URL", {"ROUTEBANDIT_DATABASE_URL": PLANTED}),
    ("OTHER_API_KEY", {"OTHER_API_KEY": PLANTED}),
    ("PLANTED", {"PLANTED": PLANTED}),
], ids=["reserved", "holds-the-database-url", "not-a-key-name"])
async def test_keys_are_checked_again_at_call_time(
    name: str, env: dict[str, str], listener: Listener, caplog: pytest.LogCaptureFixture,
) -> None:
    policy = EgressPolicy(loopback=True, key_envs=("*_API_KEY", "ROUTEBANDIT_*"),
                          database_url=PLANTED)
    client = new_client(egress=policy)
    spec = ModelSpec(name="m", base_url=f"http://{FORBIDDEN}:{listener.port}/v1",
                     api_key_env=name)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(UpstreamConfigError, match="api_key_env") as info:
            await Upstream(client, env=env, egress=policy).complete(spec, {})
    finally:
        await client.aclose()
    assert not isinstance(info.value, UpstreamRefused)
    assert listener.accepted == 0
    assert PLANTED not in str(info.value) and PLANTED not in caplog.text


# -- the service: registration, start-up, stored changes ----------------------------------

CATALOG = """models:
  - {name: public-a, base_url: 'https://api.openai.com/v1', api_key_env: OPENAI_API_KEY,
     input_price: 1.0, output_price: 2.0, context_window: 64000, capabilities: [json]}
  - {name: public-b, base_url: 'https://api.together.xyz/v1', api_key_env: TOGETHER_TOKEN,
     input_price: 0.5, output_price: 0.5}
"""


def _settings(tmp_path: Path, db_url: str, catalog: str = CATALOG) -> Settings:
    path = tmp_path / "catalog.yaml"
    path.write_text(catalog)
    return service_settings(tmp_path, db_url, catalog=str(path))


def _admin_key(settings: Settings) -> str:
    store = Store(settings.resolved_database_url)
    try:
        return create_key(store, tenant="ops", admin=True)[0]
    finally:
        store.close()


@asynccontextmanager
async def _served(settings: Settings, key: str | None,
                  resolver: Names) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(settings, resolver=resolver)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://127.0.0.1", headers=headers) as c:
            yield c, app


@pytest.fixture(autouse=True)
def _no_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("UPSTREAM_ALLOW", "API_KEY_ENVS", "TRANSPORT", "MAX_ATTEMPTS"):
        monkeypatch.delenv(f"ROUTEBANDIT_GATEWAY__{name}", raising=False)


@pytest.mark.parametrize("keyed", [False, True], ids=["development", "admin-key"])
async def test_the_ssrf_registration_is_refused(
    tmp_path: Path, db_url: str, keyed: bool, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = _settings(tmp_path, db_url)
    monkeypatch.setenv("OTHER_API_KEY", settings.resolved_database_url)
    monkeypatch.setenv("PLANTED_SECRET", PLANTED)
    key = _admin_key(settings) if keyed else None
    async with _served(settings, key, Names({})) as (client, _):
        caplog.clear()
        caplog.set_level(logging.DEBUG)
        bodies = []
        for spec, field, rule in [
            ({"base_url": "http://169.254.169.254/latest"}, "base_url", "cloud metadata"),
            ({"base_url": "http://[fd00:ec2::254]/latest"}, "base_url", "cloud metadata"),
            ({"base_url": "http://10.0.0.1/v1"}, "base_url", "private address"),
            ({"base_url": "http://169.254.169.254/latest",
              "api_key_env": "ROUTEBANDIT_DATABASE_URL"}, "api_key_env",
             "starts with ROUTEBANDIT_"),
            ({"api_key_env": "OTHER_API_KEY"}, "api_key_env", "holds the database URL"),
            ({"api_key_env": "PLANTED_SECRET"}, "api_key_env", "matches none of"),
        ]:
            r = await client.post("/v1/models", json={"name": "x", **spec})
            error = r.json()["error"]
            assert r.status_code == 422 and error["field"] == f"model.{field}", r.text
            setting = "upstream_allow" if field == "base_url" else "api_key_envs"
            assert rule in error["message"] and setting in error["message"]
            bodies.append(r.text)
        names = {m["id"] for m in (await client.get("/v1/models")).json()["data"]}
    assert "x" not in names
    for text in [*bodies, caplog.text]:
        assert PLANTED not in text and settings.resolved_database_url not in text


@pytest.mark.parametrize(("entry", "rule", "setting"), [
    ("{name: leak, api_key_env: ROUTEBANDIT_DATABASE_URL}", "starts with ROUTEBANDIT_",
     "api_key_envs"),
    ("{name: leak, api_key_env: HOME}", "matches none of", "api_key_envs"),
    ("{name: leak, base_url: 'http://169.254.169.254/latest'}", "cloud metadata",
     "upstream_allow"),
], ids=["reserved-key", "not-a-key-name", "metadata"])
async def test_start_up_refuses_such_a_catalog_file(
    tmp_path: Path, db_url: str, entry: str, rule: str, setting: str,
) -> None:
    settings = _settings(tmp_path, db_url, CATALOG + f"  - {entry}\n")
    with pytest.raises(SettingsError) as info:
        preflight(settings, resolver=Names({}))
    message = str(info.value)
    assert message.startswith("setting 'catalog'") and "model 'leak'" in message
    assert rule in message and setting in message
    app = create_app(settings, resolver=Names({}))
    with pytest.raises(SettingsError, match=rule):
        async with app.router.lifespan_context(app):
            pass


async def test_a_public_catalog_starts_and_loopback_needs_the_allow_list(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(tmp_path, db_url)
    _admin_key(settings)
    resolver = Names({"api.openai.com": [PUBLIC]})
    preflight(settings, resolver=resolver).store.close()  # resolved: checked, public
    assert resolver.calls == ["api.openai.com", "api.together.xyz"]
    local = _settings(tmp_path, db_url, CATALOG + f"  - {{name: local, base_url: "
                      f"'http://{FORBIDDEN}:1/v1'}}\n")
    with pytest.raises(SettingsError, match="loopback address.*upstream_allow"):
        preflight(local, resolver=resolver)
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__UPSTREAM_ALLOW", f'["{FORBIDDEN}"]')
    local = _settings(tmp_path, db_url, CATALOG + f"  - {{name: local, base_url: "
                      f"'http://{FORBIDDEN}:1/v1'}}\n")  # settings read at start-up
    preflight(local, resolver=resolver).store.close()


async def test_a_forbidden_listener_is_never_reached(
    tmp_path: Path, db_url: str, listener: Listener, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(tmp_path, db_url)
    key = _admin_key(settings)  # not development mode: loopback is not admitted
    store = Store(settings.resolved_database_url)
    store.set_catalog_change("stored", {"name": "stored", "api_key_env": "X_API_KEY",
                                        "base_url": f"http://{FORBIDDEN}:{listener.port}/v1"})
    store.close()
    monkeypatch.setenv("X_API_KEY", PLANTED)
    resolver = Names({"sneaky.test": [FORBIDDEN]})
    with caplog.at_level(logging.WARNING, logger="routebandit.service"):
        async with _served(settings, key, resolver) as (client, app):
            assert "stored" not in app.state.service.catalog  # skipped at start
            for base_url in (f"http://{FORBIDDEN}:{listener.port}/v1",
                             f"http://sneaky.test:{listener.port}/v1",
                             f"http://[::ffff:{FORBIDDEN}]:{listener.port}/v1"):
                r = await client.post("/v1/models", json={
                    "name": "sneaky", "base_url": base_url, "api_key_env": "X_API_KEY"})
                assert r.status_code == 422, r.text
                assert r.json()["error"]["field"] == "model.base_url"
                assert "loopback address" in r.text and "upstream_allow" in r.text
            r = await client.post("/v1/chat/completions",
                                  json={"model": "stored", "messages": MESSAGES})
            assert r.status_code in (400, 404, 422), r.text
    assert any("catalog_changes[stored].base_url" in rec.getMessage()
               for rec in caplog.records)
    assert listener.accepted == 0
    assert PLANTED not in caplog.text


@TRANSPORTS
async def test_rebinding_through_the_service_is_refused_at_call_time(
    tmp_path: Path, db_url: str, listener: Listener, transport: str,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__TRANSPORT", transport)
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__MAX_ATTEMPTS", "1")
    monkeypatch.setenv("REBIND_API_KEY", PLANTED)
    settings = _settings(tmp_path, db_url)
    key = _admin_key(settings)
    resolver = Names({"rebind.test": [PUBLIC]})
    async with _served(settings, key, resolver) as (client, _):
        r = await client.post("/v1/models", json={
            "name": "rebind", "base_url": f"http://rebind.test:{listener.port}/v1",
            "api_key_env": "REBIND_API_KEY"})
        assert r.status_code == 201, r.text
        resolver.names["rebind.test"] = [FORBIDDEN]
        caplog.clear()
        caplog.set_level(logging.DEBUG)
        r = await client.post("/v1/chat/completions",
                              json={"model": "rebind", "messages": MESSAGES})
    error = r.json()["error"]
    assert r.status_code == 502 and error["code"] == "upstream_egress_refused", r.text
    assert "loopback address" in error["message"] and "upstream_allow" in error["message"]
    assert resolver.calls.count("rebind.test") == 2  # registration, then the call
    assert listener.accepted == 0
    assert PLANTED not in r.text and PLANTED not in caplog.text


async def test_catalog_error_names_the_model_field() -> None:
    policy = EgressPolicy(resolver=Names({}))
    spec = ModelSpec(name="m", base_url="http://169.254.169.254/latest")
    with pytest.raises(CatalogError, match=r"^models\[3\].base_url: 169.254.169.254 is a "
                                           r"cloud metadata address"):
        policy.check_model(spec, "models[3]", env={})
