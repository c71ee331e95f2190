"""Keep web pages from driving the service (plain ASGI middleware).

A page the operator visits can make their browser send requests to the service: form
posts and ``fetch`` with ``text/plain`` bodies go cross-site without a CORS preflight,
and DNS rebinding makes a hostile name resolve to 127.0.0.1. So:

- every ``POST``/``PUT``/``PATCH`` with a body must declare a JSON content type (415
  otherwise), which a browser sends cross-site only after a preflight, and the service
  answers no preflight (it sends no CORS headers at all);
- in development mode (no API keys: every request acts as the admin) the ``Host`` header
  must name this machine (``localhost``, ``127.0.0.1``, ``[::1]``, any port: a rebound
  name is refused), and so must an ``Origin`` header when there is one (403 otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_WRITES = frozenset({"POST", "PUT", "PATCH"})


def is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, parameters ignored."""
    if not content_type:
        return False
    media = content_type.partition(";")[0].strip().lower()
    maintype, _, subtype = media.partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


def is_loopback_host(host: str) -> bool:
    """Whether a ``Host`` header value (name or address, optional port) is this machine."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        name = host[: host.find("]") + 1] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in LOOPBACK_NAMES or (name.startswith("127.")
                                      and name.replace(".", "").isdigit())


def is_loopback_origin(origin: str) -> bool:
    parts = urlsplit(origin.strip())
    return parts.scheme in ("http", "https") and is_loopback_host(parts.netloc)


class BrowserGuard:
    """See the module docstring. ``dev_mode()`` says whether development mode is on."""

    def __init__(self, app: ASGIApp, *, dev_mode: Callable[[], bool]) -> None:
        self.app = app
        self.dev_mode = dev_mode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = content_type = None
        has_body = False
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                has_body = value.strip() not in (b"0", b"")
            elif name == b"transfer-encoding":
                has_body = True
        problem: tuple[int, str, str] | None = None
        if self.dev_mode():
            if host is not None and not is_loopback_host(host):
                problem = (403, "host", "development mode answers only this machine: the "
                           "Host header must be localhost, 127.0.0.1 or [::1] (create an "
                           "API key with `routebandit keys create` to serve other names)")
            elif origin is not None and not is_loopback_origin(origin):
                problem = (403, "origin", "development mode answers no web page from "
                           "another origin (create an API key to serve browsers)")
        if problem is None and has_body and scope["method"] in _WRITES and not is_json(
                content_type):
            problem = (415, "content-type", "the request body must be JSON: send the header "
                       "'Content-Type: application/json'")
        if problem is None:
            await self.app(scope, receive, send)
            return
        await _refuse(scope, send, *problem)


async def _refuse(scope: Scope, send: Send, status: int, field: str, message: str) -> None:
    path = scope.get("path", "")
    if path.startswith(("/v1/chat/", "/v1/responses")):  # the doors OpenAI's clients speak
        body: dict[str, Any] = {"error": {
            "message": message, "type": "invalid_request_error", "param": field,
            "code": "forbidden" if status == 403 else "unsupported_media_type"}}
    elif path.startswith("/v1/messages"):  # the door Anthropic's clients speak
        body = {"type": "error", "error": {
            "type": "permission_error" if status == 403 else "invalid_request_error",
            "message": f"{field}: {message}"}}
    else:
        kind = "forbidden" if status == 403 else "unsupported_media_type"
        body = {"error": {"type": kind, "message": f"{field}: {message}", "field": field}}
    payload = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
