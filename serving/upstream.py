"""The upstream client: httpx.AsyncClient speaking OpenAI's Chat Completions protocol
(or Anthropic's Messages API for a catalog model with ``api: anthropic``, Gemini's
``generateContent`` for ``api: gemini``, translated both ways by
:mod:`serving.native_anthropic` and :mod:`serving.native_gemini`).

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

Each call runs under a :class:`Budget`: by when the first byte must come (for a stream,
its first chunk), by when the whole answer, how long the body may fall silent between
two reads, and how large it may be. A body is an answer only if
:mod:`serving.sse` says so (a 200 with an error object, without choices, a stream cut
short or with a malformed event are upstream errors here, not answers).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
import certifi
import httpcore
import httpx

from bandit.catalog import ModelSpec
from bandit.errors import RouteBanditError
from serving.aiohttp_transport import AiohttpTransport
from serving.egress import EgressError, EgressPolicy, literal_address
from serving.native_anthropic import VERSION as ANTHROPIC_VERSION
from serving.native_anthropic import MessagesStream, NativeFault, to_completion, to_messages
from serving.native_gemini import GenerateStream, method_url, retry_delay, to_generate
from serving.native_gemini import to_completion as gemini_completion
from serving.sse import ChatStream, StreamFault, completion_fault, split

T = TypeVar("T")


class _Translator(Protocol):
    """A native stream's events in, Chat Completions chunks out (NativeFault when the
    stream is not an answer); :meth:`end` at the end of the body."""

    done: bool

    def event(self, event: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    def end(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class _Native:
    """A native protocol (catalog ``api``): its path under base_url (none: the URL names
    the model), the request as it is sent, the answer as a chat body, its stream."""

    path: str
    request: Callable[[Mapping[str, Any]], dict[str, Any]]
    answer: Callable[[Mapping[str, Any], str], dict[str, Any]]
    stream: Callable[[str], _Translator]


def _native_request(native: _Native, spec: ModelSpec,
                    payload: Mapping[str, Any]) -> dict[str, Any]:
    """The request in the upstream's own API; one it cannot say (a file by an OpenAI
    file id, say) is this model's to skip: another may take it."""
    try:
        return native.request(payload)
    except NativeFault as exc:
        raise UpstreamConfigError(f"{spec.name}: {exc}", model=spec.name) from exc


_NATIVE = {"anthropic": _Native("messages", to_messages, to_completion, MessagesStream),
           "gemini": _Native("", to_generate, gemini_completion, GenerateStream)}

# After [DONE], how long the rest of a stream's body (the end of its chunked encoding)
# is waited for, so the connection goes back to the pool instead of being dropped.
_DRAIN_S = 1.0

# Statuses after which another model may well succeed: rate limits and server faults.
RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
# The upstream is out of capacity, which says nothing of its answers: 429 always; 503 (and
# 529, "overloaded") when it says when to come back (Retry-After).
CAPACITY_STATUS = frozenset({429})
OVERLOADED_STATUS = frozenset({503, 529})
# A Retry-After beyond this is not believed (a cooldown of hours from one header).
MAX_RETRY_AFTER_S = 600.0


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


class UpstreamTooLarge(UpstreamError):
    """The answer is larger than the call's ``max_bytes``."""

    kind = "too_large"


class UpstreamBadAnswer(UpstreamError):
    """A 200 that is not an answer: an error object (body or stream event), no choices."""

    kind = "bad_answer"


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status; ``body`` is its payload, unchanged.

    ``capacity``: a refusal for lack of capacity (429, or 503/529 with Retry-After),
    which says nothing of the model's answers; ``retry_after`` its seconds, if given.
    """

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
        self.retry_after = retry_after_s(self.headers)
        self.capacity = status_code in CAPACITY_STATUS or (
            status_code in OVERLOADED_STATUS and self.retry_after is not None)


def retry_after_s(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now, at most
    :data:`MAX_RETRY_AFTER_S`; None if absent or unreadable."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed to connect, between two bytes of an answer once it has begun
    (the wait for its first byte is the call's :class:`Budget`), and for a pool slot."""

    connect: float = 5.0
    read: float = 30.0
    write: float = 30.0
    pool: float = 5.0

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write,
                             pool=self.pool)


@dataclass(frozen=True)
class Budget:
    """What one call may take. Times are the event loop's (``loop.time()``).

    The response headers, and for a stream its first chunk, must have come by
    ``first_byte_at``; the whole answer by ``end_at``; the body may fall silent for at
    most ``idle_s`` between two reads (None: :class:`Timeouts`'s ``read``) and hold at
    most ``max_bytes`` (None: no limit). ``first_byte_s`` and ``total_s`` are the same
    limits in seconds, for the messages that name them.
    """

    first_byte_at: float
    end_at: float
    idle_s: float | None = None
    max_bytes: int | None = None
    first_byte_s: float = math.inf
    total_s: float = math.inf

    @classmethod
    def from_now(cls, *, first_byte_s: float = math.inf, total_s: float = math.inf,
                 idle_s: float | None = None, max_bytes: int | None = None) -> Budget:
        now = asyncio.get_running_loop().time()
        first = min(first_byte_s, total_s)
        return cls(first_byte_at=now + first, end_at=now + total_s, idle_s=idle_s,
                   max_bytes=max_bytes, first_byte_s=first, total_s=total_s)


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
    if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):  # never reached it
        return UpstreamConnectError(f"{model}: cannot connect to upstream "
                                    f"({type(exc).__name__})", model=model)
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
        self._urls: dict[tuple[str, str | None], str] = {}  # (base_url, api) -> checked URL
        self._timeout = (timeouts or Timeouts()).httpx()

    @property
    def egress(self) -> EgressPolicy:
        """The egress policy every call is checked against (serving/egress.py)."""
        return self._egress

    @property
    def env(self) -> Mapping[str, str]:
        """Where API keys are read from (the key variables the catalog names)."""
        return self._env

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
        url = self._urls.get((spec.base_url, spec.api))
        try:
            if url is None:
                self._egress.check_url(spec.base_url)
                # Gemini's URL names the model and the method: see _call_url.
                path = _NATIVE[spec.api].path if spec.api in _NATIVE else "chat/completions"
                url = self._urls[(spec.base_url, spec.api)] = \
                    f"{spec.base_url}/{path}" if path else spec.base_url
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
            if spec.api == "anthropic":
                headers["x-api-key"] = key
            elif spec.api == "gemini":
                headers["x-goog-api-key"] = key
            else:
                headers["authorization"] = f"Bearer {key}"
        if spec.api == "anthropic":
            headers["anthropic-version"] = ANTHROPIC_VERSION
        return url, headers

    def _timeout_for(self, budget: Budget) -> httpx.Timeout:
        # The transport's own timeouts, none beyond the budget's end. Its read timeout is
        # a backstop only: the first byte and the silences are timed here (_within), since
        # a transport's read timeout would also cut the wait for a non-streamed answer.
        t = self._timeout
        left = max(0.001, budget.end_at - asyncio.get_running_loop().time())
        if math.isinf(left):
            return httpx.Timeout(connect=t.connect, read=None, write=t.write, pool=t.pool)
        return httpx.Timeout(
            connect=min(t.connect or left, left), read=left,
            write=min(t.write or left, left), pool=min(t.pool or left, left),
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

    async def _respond(self, spec: ModelSpec, shard: int, url: str, headers: dict[str, str],
                       payload: Mapping[str, Any], budget: Budget) -> _Response:
        """Send the request; the response once its headers are in (by first_byte_at)."""
        content = json.dumps(payload, separators=(",", ":")).encode()
        try:
            return await _within(
                self._send(shard, url, headers, content, self._timeout_for(budget)),
                budget.first_byte_at)
        except asyncio.TimeoutError:
            raise _late(spec.name, budget, first=True) from None
        except httpx.HTTPError as exc:
            raise _translate(exc, spec.name) from exc
        except EgressError as exc:  # refused at connect time
            raise _refused(exc, spec.name) from exc

    def _body(self, spec: ModelSpec, resp: _Response, budget: Budget,
              first_by: float | None = None) -> _Body:
        idle = budget.idle_s if budget.idle_s is not None else self._timeout.read
        return _Body(resp, budget, idle_s=idle if idle is not None else math.inf,
                     model=spec.name, first_by=first_by)

    async def complete(
        self, spec: ModelSpec, payload: Mapping[str, Any], *, budget: Budget | None = None
    ) -> Completion:
        """POST a non-streamed request and read the answer within ``budget``.

        Error statuses raise :class:`UpstreamStatusError`; a 2xx that is not an answer
        raises :class:`UpstreamBadAnswer` (or :class:`UpstreamProtocolError` if it is
        not JSON). A redirect is returned as it came (it is never followed).
        """
        url, headers = self._target(spec)
        native = _NATIVE.get(spec.api or "")
        if native is not None:
            url = _call_url(spec, url, payload, stream=False)
            payload = _native_request(native, spec, payload)
        budget = budget or Budget.from_now()
        shard = self._take()
        try:
            resp = await self._respond(spec, shard, url, headers, payload, budget)
            try:
                raw = await self._body(spec, resp, budget).read_all()
            finally:
                await resp.aclose()
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
        if native is not None and resp.status_code < 300:
            try:
                body = native.answer(body, spec.name)
            except NativeFault as exc:
                error = UpstreamBadAnswer if exc.error else UpstreamProtocolError
                raise error(f"{spec.name}: {exc}", model=spec.name) from None
        fault = completion_fault(body) if resp.status_code < 300 else None
        if fault is not None:
            raise UpstreamBadAnswer(f"{spec.name}: {fault}", model=spec.name)
        return Completion(resp.status_code, body)

    @asynccontextmanager
    async def stream(
        self, spec: ModelSpec, payload: Mapping[str, Any], *, budget: Budget | None = None
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Open a streamed request; yields an iterator of its checked chunks (dicts).

        The status is checked before anything is yielded, so an error status raises
        :class:`UpstreamStatusError` while failover is still possible. The iterator
        raises an :class:`UpstreamError` for a malformed or error event, a stream that
        ends without a finish_reason or ``[DONE]``, a silence or a budget overrun; its
        first chunk comes by ``budget.first_byte_at`` (comments do not count).
        """
        url, headers = self._target(spec)
        headers["accept"] = "text/event-stream"
        native = _NATIVE.get(spec.api or "")
        if native is not None:
            url = _call_url(spec, url, payload, stream=True)
            payload = _native_request(native, spec, payload)
        budget = budget or Budget.from_now()
        shard = self._take()
        try:
            resp = await self._respond(spec, shard, url, headers, payload, budget)
        except BaseException:
            self._busy[shard] -= 1
            raise
        try:
            if resp.status_code >= 400:
                body = await self._body(spec, resp, budget).read_all()
                raise _status_error(spec.name, resp.status_code, body, resp.headers)
            reader = self._body(spec, resp, budget, first_by=budget.first_byte_at)
            yield (_chunks(reader, spec.name) if native is None
                   else _native_chunks(reader, spec.name, native.stream(spec.name)))
        finally:
            self._busy[shard] -= 1
            await resp.aclose()


def _call_url(spec: ModelSpec, url: str, payload: Mapping[str, Any], *, stream: bool) -> str:
    if spec.api != "gemini":
        return url
    return method_url(url, str(payload.get("model") or spec.wire_name), stream=stream)


async def _within(aw: Awaitable[T], when: float) -> T:
    """``await aw``, cancelled at loop time ``when`` (asyncio.TimeoutError then)."""
    if math.isinf(when):
        return await aw
    if sys.version_info >= (3, 11):
        async with asyncio.timeout_at(when):
            return await aw
    return await asyncio.wait_for(aw, max(0.0, when - asyncio.get_running_loop().time()))


def _late(model: str, budget: Budget, *, first: bool = False, idle_s: float = 0.0,
          silent: bool = False) -> UpstreamTimeout:
    if silent:
        what = f"nothing for {_seconds(idle_s)} s (read_timeout_s)"
    elif first:
        what = f"no first byte within {_seconds(budget.first_byte_s)} s"
    else:
        what = f"not finished within {_seconds(budget.total_s)} s"
    return UpstreamTimeout(f"{model}: upstream timed out: {what}", model=model)


def _seconds(value: float) -> str:
    # 0.999 -> "1", 0.333 -> "0.3", 19.98 -> "20": what the limit was, not its jitter
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}".rstrip("0").rstrip(".")


class _Body:
    """One response's body, read under its budget: each read by the next of ``first_by``
    (until the first chunk of a stream), ``idle_s`` from now and the budget's end."""

    def __init__(self, resp: _Response, budget: Budget, *, idle_s: float, model: str,
                 first_by: float | None = None) -> None:
        self._it = resp.aiter_bytes()
        self._budget = budget
        self._idle_s = idle_s
        self._model = model
        self.first_by = first_by
        self._size = 0
        declared = resp.headers.get("content-length")
        if (budget.max_bytes is not None and declared is not None and declared.isdigit()
                and int(declared) > budget.max_bytes):
            raise self._too_large(int(declared))

    def _too_large(self, size: int) -> UpstreamTooLarge:
        return UpstreamTooLarge(
            f"{self._model}: the answer is larger than max_response_bytes "
            f"({self._budget.max_bytes} bytes; {size} and counting)", model=self._model)

    async def read(self) -> bytes | None:
        """The next bytes, or None at the end of the body."""
        now = asyncio.get_running_loop().time()
        when, why = self._budget.end_at, "end"
        if self.first_by is not None and self.first_by < when:
            when, why = self.first_by, "first"
        if now + self._idle_s < when:
            when, why = now + self._idle_s, "idle"
        try:
            piece = await _within(self._it.__anext__(), when)
        except StopAsyncIteration:
            return None
        except asyncio.TimeoutError:
            raise _late(self._model, self._budget, first=why == "first",
                        idle_s=self._idle_s, silent=why == "idle") from None
        except httpx.HTTPError as exc:
            raise _translate(exc, self._model) from exc
        self._size += len(piece)
        if self._budget.max_bytes is not None and self._size > self._budget.max_bytes:
            raise self._too_large(self._size)
        return piece

    async def read_all(self) -> bytes:
        parts: list[bytes] = []
        while (piece := await self.read()) is not None:
            parts.append(piece)
        return b"".join(parts)

    async def drain(self, seconds: float) -> None:
        """Read to the end for at most ``seconds`` (so the connection can be reused);
        whatever comes, or fails to, no longer matters."""
        self.first_by = asyncio.get_running_loop().time() + seconds
        try:
            while await self.read() is not None:
                pass
        except UpstreamError:
            pass  # closing the response drops the connection instead


async def _chunks(body: _Body, model: str) -> AsyncIterator[dict[str, Any]]:
    """The stream's chunks, each yielded as soon as its event's blank line arrives."""
    check = ChatStream()
    buf = b""
    try:
        while not check.done and (piece := await body.read()) is not None:
            events, buf = split(buf + piece)
            for event in events:
                chunk = check.event(event)
                if chunk is not None:
                    body.first_by = None  # the first chunk came: from now on, silences
                    yield chunk
        if not check.done and buf.strip():  # a last event without its blank line
            chunk = check.event(buf.strip())
            if chunk is not None:
                yield chunk
        check.end()
        if check.done:
            await body.drain(_DRAIN_S)
    except StreamFault as exc:
        error = UpstreamBadAnswer if exc.error else UpstreamProtocolError
        raise error(f"{model}: {exc}", model=model) from None


async def _native_chunks(body: _Body, model: str,
                         check: _Translator) -> AsyncIterator[dict[str, Any]]:
    """A native stream's events as Chat Completions chunks, checked as they come."""
    buf = b""
    try:
        while not check.done and (piece := await body.read()) is not None:
            events, buf = split(buf + piece)
            for raw in events:
                for chunk in check.event(_event_data(raw)):
                    body.first_by = None
                    yield chunk
        if not check.done and buf.strip():
            for chunk in check.event(_event_data(buf.strip())):
                yield chunk
        for chunk in check.end():
            yield chunk
        await body.drain(_DRAIN_S)
    except NativeFault as exc:
        error = UpstreamBadAnswer if exc.error else UpstreamProtocolError
        raise error(f"{model}: {exc}", model=model) from None


def _event_data(raw: bytes) -> dict[str, Any]:
    data = b"\n".join(line[5:].lstrip(b" ") for line in raw.split(b"\n")
                      if line.startswith(b"data:"))
    if not data:
        return {}  # a comment
    try:
        event = json.loads(data)
    except ValueError:
        raise NativeFault(f"malformed event: {data[:80]!r}") from None
    if not isinstance(event, dict):
        raise NativeFault(f"malformed event (not a JSON object): {data[:80]!r}")
    return event


def _status_error(model: str, status: int, body: bytes,
                  headers: Mapping[str, str]) -> UpstreamStatusError:
    detail = body[:300].decode("utf-8", "replace")
    keep = {k: v for k, v in headers.items() if k.lower() in ("retry-after", "content-type")}
    if status in CAPACITY_STATUS | OVERLOADED_STATUS and not any(
            k.lower() == "retry-after" for k in keep):
        delay = retry_delay(body)  # Google says when to come back in the body
        if delay is not None:
            keep["retry-after"] = delay
    return UpstreamStatusError(f"{model}: upstream answered {status}: {detail}", model=model,
                               status_code=status, body=body, headers=keep)
