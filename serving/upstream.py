"""The upstream client: httpx.AsyncClient speaking OpenAI's Chat Completions protocol.

Every model in the catalog names an OpenAI-compatible ``base_url`` and the environment
variable holding its key (``api_key_env``). httpx's exceptions are translated into the
:class:`UpstreamError` family here, and only here, so the gateway reasons about
"connect error", "timeout", "status 503" or "broken stream" without knowing httpx.

By default (``transport="aiohttp"``) the client's aiohttp transport sends the requests
itself, skipping httpx's client layer: see :mod:`serving.aiohttp_transport`.

Where calls may go and which variables may hold keys is :mod:`serving.egress`'s policy:
checked here before each call (scheme, literal addresses, the key variable) and by both
transports on every new connection, on the addresses actually connected to. Neither
follows redirects.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import certifi
import httpcore
import httpx

from bandit.catalog import ModelSpec
from bandit.errors import RouteBanditError
from serving.aiohttp_transport import AiohttpTransport
from serving.egress import EgressError, EgressPolicy, literal_address

# Statuses after which another model may well succeed: rate limits and server faults.
RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class UpstreamError(RouteBanditError):
    """A call to an upstream model failed; ``retryable`` says whether failover may help."""

    retryable = True
    kind = "upstream_error"

    def __init__(self, message: str, *, model: str) -> None:
        super().__init__(message)
        self.model = model


class UpstreamConnectError(UpstreamError):
    """The upstream could not be reached (refused, DNS, TLS)."""

    kind = "connect_error"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer, or stopped streaming, within the timeout."""

    kind = "timeout"


class UpstreamProtocolError(UpstreamError):
    """The upstream broke the protocol: a cut stream, a body that is not JSON."""

    kind = "protocol_error"


class UpstreamConfigError(UpstreamError):
    """The model cannot be called as configured (no base_url, key variable unset)."""

    retryable = True
    kind = "config_error"


class UpstreamRefused(UpstreamConfigError):
    """The egress policy refuses the upstream's address (:mod:`serving.egress`): calling
    the same model again is refused again; another model may do."""

    kind = "egress_refused"


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status; ``body`` is its payload, unchanged."""

    kind = "status_error"

    def __init__(
        self, message: str, *, model: str, status_code: int, body: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, model=model)
        self.status_code = status_code
        self.body = body
        self.headers = dict(headers or {})
        self.retryable = status_code in RETRYABLE_STATUS


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed to connect, between two bytes read, and for a pool slot."""

    connect: float = 5.0
    read: float = 120.0
    write: float = 30.0
    pool: float = 5.0

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write,
                             pool=self.pool)


@dataclass(frozen=True)
class Completion:
    """A non-streamed answer: the parsed body and the upstream's status."""

    status_code: int
    body: dict[str, Any]


class _Response(Protocol):
    """What the upstream client reads: an httpx.Response or an aiohttp one."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def aread(self) -> bytes: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


def new_client(
    *, timeouts: Timeouts | None = None, max_connections: int = 512,
    ssl_context: ssl.SSLContext | None = None, transport: str = "httpx",
    egress: EgressPolicy | None = None,
) -> httpx.AsyncClient:
    """The shared client (the app's lifespan owns and closes it).

    ``transport="aiohttp"`` puts the client on :class:`AiohttpTransport`, which
    :class:`Upstream` then calls directly. Every connection is checked against
    ``egress`` (default: the strict policy, public addresses only).
    """
    egress = egress if egress is not None else EgressPolicy()
    limits = httpx.Limits(max_connections=max_connections,
                          max_keepalive_connections=max_connections, keepalive_expiry=30.0)
    options: dict[str, Any] = dict(timeout=(timeouts or Timeouts()).httpx(), limits=limits,
                                   follow_redirects=False, trust_env=False)
    if transport == "aiohttp":
        engine = AiohttpTransport(max_connections=max_connections, ssl_context=ssl_context,
                                  egress=egress)
        return AiohttpClient(engine=engine, **options)
    if transport != "httpx":
        raise ValueError(f"transport: must be 'httpx' or 'aiohttp', got {transport!r}")
    context = ssl_context or httpx.create_ssl_context(trust_env=False)
    guarded = httpx.AsyncHTTPTransport(verify=context, limits=limits, trust_env=False)
    # httpx takes no network backend: its pool is rebuilt as httpx builds it, on one
    # that resolves and checks the host and connects to the checked address.
    guarded._pool = httpcore.AsyncConnectionPool(
        ssl_context=context, max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry, network_backend=_GuardedBackend(egress))
    return httpx.AsyncClient(transport=guarded, **options)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend behind the egress policy: the host is resolved here,
    every address checked, and only a checked address is connected to (so a name that
    resolves elsewhere at call time than at registration is still refused)."""

    def __init__(self, egress: EgressPolicy) -> None:
        self._egress = egress
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,
        local_address: str | None = None, socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            if literal_address(host) is not None:  # nothing to resolve
                addresses = self._egress.admitted(host, port)
            else:
                with anyio.fail_after(timeout):
                    addresses = await anyio.to_thread.run_sync(
                        self._egress.admitted, host, port, abandon_on_cancel=True)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:  # does not resolve
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        error: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None  # admitted() returns at least one address
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not upstreams")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class AiohttpClient(httpx.AsyncClient):
    """An httpx client on :class:`AiohttpTransport`; :class:`Upstream` sends its requests
    through ``engine`` directly (closing the client closes the engine)."""

    def __init__(self, *, engine: AiohttpTransport, **kwargs: Any) -> None:
        super().__init__(transport=engine, **kwargs)
        self.engine = engine


def _refused(exc: EgressError, model: str) -> UpstreamError:
    if exc.field == "api_key_env":
        return UpstreamConfigError(f"{model}: api_key_env: {exc}", model=model)
    return UpstreamRefused(f"{model}: refused: {exc}", model=model)


def _translate(exc: httpx.HTTPError, model: str) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{model}: upstream timed out ({type(exc).__name__})", model=model)
    if isinstance(exc, httpx.ConnectError):
        return UpstreamConnectError(f"{model}: cannot connect to upstream ({exc})", model=model)
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return UpstreamProtocolError(
            f"{model}: upstream connection broke ({type(exc).__name__}: {exc})", model=model
        )
    return UpstreamError(f"{model}: upstream call failed ({type(exc).__name__}: {exc})",
                         model=model)


def new_clients(
    n: int, *, timeouts: Timeouts | None = None, max_connections: int = 512,
    transport: str = "httpx", egress: EgressPolicy | None = None,
) -> list[httpx.AsyncClient]:
    """``n`` clients sharing ``max_connections`` and one TLS context (loading the CA
    bundle is the slow part of making a client); see :class:`Upstream` for why. aiohttp's
    pool has no such cost, so with it one client is enough."""
    context = ssl.create_default_context(cafile=certifi.where())
    if transport == "aiohttp":
        return [new_client(timeouts=timeouts, max_connections=max_connections,
                           ssl_context=context, transport=transport, egress=egress)]
    per = max(1, max_connections // max(1, n))
    return [new_client(timeouts=timeouts, max_connections=per, ssl_context=context,
                       egress=egress)
            for _ in range(max(1, n))]


class Upstream:
    """Calls the model a :class:`~bandit.catalog.ModelSpec` describes.

    ``env`` is the mapping keys are read from (the process environment in production,
    a dict in tests); keys are looked up on each call so a rotated key takes effect.
    ``egress`` (default: the strict policy) is checked before each call: the key
    variable's name and value, the URL's scheme and a literal address (aiohttp never
    resolves those, so its connect-time check would not see them).

    Given several clients, each call goes to the least busy one. httpcore's pool scans
    every pooled connection (with a ``poll`` syscall each) on every request, so one
    client with 32 live connections spends ~3x the CPU per request of 8 clients with 4.
    """

    def __init__(
        self,
        client: httpx.AsyncClient | Sequence[httpx.AsyncClient],
        *,
        env: Mapping[str, str],
        egress: EgressPolicy | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self._clients = [client] if isinstance(client, httpx.AsyncClient) else list(client)
        if not self._clients:
            raise ValueError("Upstream needs at least one httpx.AsyncClient")
        self._engines = [c.engine if isinstance(c, AiohttpClient) else None
                         for c in self._clients]
        self._busy = [0] * len(self._clients)
        self._env = env
        self._egress = egress if egress is not None else EgressPolicy()
        self._urls: dict[str, str] = {}  # base_url -> checked chat URL
        self._timeout = (timeouts or Timeouts()).httpx()

    @property
    def client(self) -> httpx.AsyncClient:
        return self._clients[0]

    def _take(self) -> int:
        busy = self._busy
        i = busy.index(min(busy)) if len(busy) > 1 else 0
        busy[i] += 1
        return i

    def _target(self, spec: ModelSpec) -> tuple[str, dict[str, str]]:
        if not spec.base_url:
            raise UpstreamConfigError(f"{spec.name}: the catalog gives it no base_url",
                                      model=spec.name)
        url = self._urls.get(spec.base_url)
        try:
            if url is None:
                self._egress.check_url(spec.base_url)
                url = self._urls[spec.base_url] = f"{spec.base_url}/chat/completions"
            key = self._egress.key(spec.api_key_env, self._env) if spec.api_key_env else None
        except EgressError as exc:
            raise _refused(exc, spec.name) from exc
        headers = {"content-type": "application/json", "accept": "application/json"}
        if spec.api_key_env:
            if not key:
                raise UpstreamConfigError(
                    f"{spec.name}: environment variable {spec.api_key_env} is not set",
                    model=spec.name,
                )
            headers["authorization"] = f"Bearer {key}"
        return url, headers

    def _timeout_within(self, seconds: float | None) -> httpx.Timeout:
        if seconds is None:
            return self._timeout
        t = self._timeout
        return httpx.Timeout(
            connect=min(t.connect or seconds, seconds), read=min(t.read or seconds, seconds),
            write=min(t.write or seconds, seconds), pool=min(t.pool or seconds, seconds),
        )

    async def _send(self, shard: int, url: str, headers: dict[str, str], content: bytes,
                    timeout: httpx.Timeout) -> _Response:
        # The response's headers are in; its body is read (or streamed) by the caller,
        # who closes it. Errors are httpx's.
        engine = self._engines[shard]
        if engine is not None:
            return await engine.send("POST", url, headers=headers, content=content,
                                     timeout=timeout)
        client = self._clients[shard]
        request = client.build_request("POST", url, content=content, headers=headers,
                                       timeout=timeout)
        return await client.send(request, stream=True)

    async def complete(
        self, spec: ModelSpec, payload: Mapping[str, Any], *, within: float | None = None
    ) -> Completion:
        """POST a non-streamed request; error statuses raise :class:`UpstreamStatusError`.

        ``within`` caps every timeout at the seconds left before the caller's deadline.
        """
        url, headers = self._target(spec)
        content = json.dumps(payload, separators=(",", ":")).encode()
        shard = self._take()
        try:
            resp = await self._send(shard, url, headers, content, self._timeout_within(within))
            try:
                raw = await resp.aread()
            finally:
                await resp.aclose()
        except httpx.HTTPError as exc:
            raise _translate(exc, spec.name) from exc
        except EgressError as exc:  # refused at connect time
            raise _refused(exc, spec.name) from exc
        finally:
            self._busy[shard] -= 1
        if resp.status_code >= 400:
            raise _status_error(spec.name, resp.status_code, raw, resp.headers)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise UpstreamProtocolError(f"{spec.name}: upstream answered with invalid JSON",
                                        model=spec.name) from exc
        if not isinstance(body, dict):
            raise UpstreamProtocolError(f"{spec.name}: upstream answer is not a JSON object",
                                        model=spec.name)
        return Completion(resp.status_code, body)

    @asynccontextmanager
    async def stream(
        self, spec: ModelSpec, payload: Mapping[str, Any], *, within: float | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Open a streamed request; yields an iterator of raw SSE events (``data: ...``).

        The status is checked before anything is yielded, so an error status raises
        :class:`UpstreamStatusError` while failover is still possible.
        """
        url, headers = self._target(spec)
        headers["accept"] = "text/event-stream"
        content = json.dumps(payload, separators=(",", ":")).encode()
        shard = self._take()
        try:
            resp = await self._send(shard, url, headers, content, self._timeout_within(within))
        except (httpx.HTTPError, EgressError) as exc:
            self._busy[shard] -= 1
            if isinstance(exc, EgressError):  # refused at connect time
                raise _refused(exc, spec.name) from exc
            raise _translate(exc, spec.name) from exc
        try:
            if resp.status_code >= 400:
                try:
                    body = await resp.aread()
                except httpx.HTTPError as exc:
                    raise _translate(exc, spec.name) from exc
                raise _status_error(spec.name, resp.status_code, body, resp.headers)
            yield _events(resp, spec.name)
        finally:
            self._busy[shard] -= 1
            await resp.aclose()


async def _events(resp: _Response, model: str) -> AsyncIterator[bytes]:
    """Split the body into SSE events, each yielded as soon as its blank line arrives."""
    buf = b""
    try:
        async for chunk in resp.aiter_bytes():
            buf += chunk
            if b"\r" in buf:
                buf = buf.replace(b"\r\n", b"\n")
            while True:
                end = buf.find(b"\n\n")
                if end < 0:
                    break
                event, buf = buf[:end], buf[end + 2 :]
                if event:
                    yield event
    except httpx.HTTPError as exc:
        raise _translate(exc, model) from exc
    if buf.strip():
        yield buf.strip()


def _status_error(model: str, status: int, body: bytes,
                  headers: Mapping[str, str]) -> UpstreamStatusError:
    detail = body[:300].decode("utf-8", "replace")
    keep = {k: v for k, v in headers.items() if k.lower() in ("retry-after", "content-type")}
    return UpstreamStatusError(f"{model}: upstream answered {status}: {detail}", model=model,
                               status_code=status, body=body, headers=keep)
