"""aiohttp under the gateway's upstream calls (the default: ``transport="aiohttp"``).

:class:`AiohttpTransport` is an httpx transport, so an ``httpx.AsyncClient`` can sit on
top of it, and it also sends requests itself (:meth:`AiohttpTransport.send`), which is
what :class:`serving.upstream.Upstream` uses: httpx's client layer (request and response
models, cookies, auth and redirect hooks) costs more CPU per call than aiohttp's whole
request. aiohttp's errors become httpx's here, so :mod:`serving.upstream` still maps one
family of errors. aiohttp is imported when this transport is used, never at import time.

Given an egress policy (:mod:`serving.egress`), the session resolves names through it, so
every address connected to is checked after DNS; aiohttp never resolves a literal
address, so those are checked before sending. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from serving.egress import EgressPolicy

# Hop-by-hop and framing headers aiohttp computes itself.
_SKIP = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection"})


def _error(exc: BaseException, request: httpx.Request | None) -> httpx.HTTPError:
    import aiohttp

    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                        aiohttp.ClientResponseError)):
        return httpx.RemoteProtocolError(message, request=request)
    return httpx.ReadError(message, request=request)


def _timeout(timeout: httpx.Timeout | Mapping[str, float | None]) -> Any:
    import aiohttp

    t = timeout.as_dict() if isinstance(timeout, httpx.Timeout) else timeout
    connect, pool = t.get("connect"), t.get("pool")
    # aiohttp's ``connect`` covers waiting for a pool slot and connecting.
    return aiohttp.ClientTimeout(
        total=None, connect=None if connect is None or pool is None else connect + pool,
        sock_connect=connect, sock_read=t.get("read"))


class Response:
    """An aiohttp response as the upstream client reads it (httpx's method names)."""

    def __init__(self, response: Any, request: httpx.Request | None = None) -> None:
        self._response = response
        self._request = request
        self.status_code: int = response.status
        self.headers: Mapping[str, str] = response.headers

    async def aread(self) -> bytes:
        import aiohttp

        try:
            body: bytes = await self._response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _error(exc, self._request) from exc
        return body

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        import aiohttp

        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _error(exc, self._request) from exc

    async def aclose(self) -> None:
        self._response.release()


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_bytes():
            yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


def _guarded_resolver(egress: EgressPolicy) -> Any:
    from aiohttp.abc import AbstractResolver, ResolveResult

    class GuardedResolver(AbstractResolver):
        """Resolves through the egress policy: every address checked, or
        :class:`~serving.egress.EgressError` (OSError if the name does not resolve)."""

        async def resolve(self, host: str, port: int = 0,
                          family: socket.AddressFamily = socket.AF_INET,
                          ) -> list[ResolveResult]:
            addresses = await asyncio.to_thread(egress.admitted, host, port)
            out: list[ResolveResult] = []
            for address in addresses:
                fam = socket.AF_INET6 if ":" in address else socket.AF_INET
                if family in (socket.AF_UNSPEC, fam):
                    out.append(ResolveResult(hostname=host, host=address, port=port,
                                             family=fam, proto=0,
                                             flags=socket.AI_NUMERICHOST))
            if not out:
                raise OSError(f"{host}: no address of family {family!r}")
            return out

        async def close(self) -> None:
            pass

    return GuardedResolver()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (made in the running loop on first use); connections are
    checked against ``egress`` when one is given."""

    def __init__(self, *, max_connections: int = 512,
                 ssl_context: ssl.SSLContext | None = None,
                 egress: EgressPolicy | None = None) -> None:
        self._max_connections = max_connections
        self._ssl = ssl_context
        self._egress = egress
        self._origins: set[str] = set()  # scheme://host:port already checked
        self._session: Any = None

    def _check(self, url: str) -> None:
        # aiohttp skips the resolver for a literal address: check it here (raises
        # EgressError). Names are checked by the resolver, on every connection.
        if self._egress is None:
            return
        end = url.find("/", url.find("//") + 2)
        origin = url if end < 0 else url[:end]
        if origin not in self._origins:
            self._egress.check_url(origin)
            self._origins.add(origin)

    def _open(self) -> Any:
        import aiohttp

        if self._session is None:
            resolver = None if self._egress is None else _guarded_resolver(self._egress)
            connector = aiohttp.TCPConnector(limit=self._max_connections,
                                             keepalive_timeout=30.0, resolver=resolver,
                                             ssl=self._ssl if self._ssl is not None else True)
            self._session = aiohttp.ClientSession(connector=connector,
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    async def send(
        self, method: str, url: str, *, headers: Mapping[str, str], content: bytes,
        timeout: httpx.Timeout,
    ) -> Response:
        """Send a request; the body is then read (or streamed) from the :class:`Response`,
        which the caller closes. Errors are httpx's (``httpx.ConnectError``, ...)."""
        import aiohttp

        self._check(url)
        session = self._open()
        try:
            response = await session.request(method, url, headers=headers, data=content,
                                              timeout=_timeout(timeout),
                                              allow_redirects=False)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _error(exc, None) from exc
        return Response(response)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import aiohttp

        self._check(str(request.url))
        session = self._open()
        headers = [(k.decode("latin-1"), v.decode("latin-1"))
                   for k, v in request.headers.raw if k.lower() not in _SKIP]
        try:
            # httpx decodes content-encoding itself: hand it the bytes as they came.
            response = await session.request(
                request.method, str(request.url), headers=headers,
                data=request.content or None, timeout=_timeout(request.extensions.get(
                    "timeout", {})), allow_redirects=False, auto_decompress=False,
            )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _error(exc, request) from exc
        return httpx.Response(
            status_code=response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1"))
                     for k, v in response.raw_headers],
            stream=_Body(Response(response, request)),
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
