"""An httpx transport that sends requests with aiohttp (opt-in: ``transport="aiohttp"``).

The gateway keeps talking to ``httpx.AsyncClient``; only the bytes go through aiohttp's
connection pool and parser, which cost a fraction of httpcore's CPU per call. aiohttp's
errors become httpx's here, so :mod:`serving.upstream` still maps one family of errors.
aiohttp is imported when this transport is built, never at import time of the package.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx

# Hop-by-hop and framing headers aiohttp computes itself.
_SKIP = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection"})


def _error(exc: BaseException, request: httpx.Request) -> httpx.HTTPError:
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


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: Any, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        import aiohttp

        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _error(exc, self._request) from exc

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (made in the running loop on first use) behind httpx."""

    def __init__(self, *, max_connections: int = 512) -> None:
        self._max_connections = max_connections
        self._session: Any = None

    def _open(self) -> Any:
        import aiohttp

        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections,
                                             keepalive_timeout=30.0)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import aiohttp

        session = self._open()
        t = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.get("connect"),
                                        sock_read=t.get("read"))
        headers = [(k.decode("latin-1"), v.decode("latin-1"))
                   for k, v in request.headers.raw if k.lower() not in _SKIP]
        try:
            response = await session.request(
                request.method, str(request.url), headers=headers,
                data=request.content or None, timeout=timeout, allow_redirects=False,
            )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _error(exc, request) from exc
        return httpx.Response(
            status_code=response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1"))
                     for k, v in response.raw_headers],
            stream=_Body(response, request),
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
