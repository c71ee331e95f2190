"""What every gateway door does around its protocol: admit the caller, let the gateway
go when the client leaves, and send a stream that cleans up even if it never starts.

The doors (``chat.py``, ``responses.py``, ``messages.py``) differ only in what they
translate and in their error shapes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from serving.gateway import Answer, Gateway, StreamAnswer, Wire


async def admit(request: Request, *, x_api_key: bool = False) -> None:
    """Authenticate like every other route (tenant on ``request.state``; raises
    RouteBanditError); apps without a key ring (tests of the gateway alone) serve
    everyone. ``x_api_key``: Anthropic's header may carry the key."""
    ring = getattr(request.app.state, "keyring", None)
    if ring is None or getattr(request.state, "principal", None) is not None:
        return
    from serving.auth import DEV_PRINCIPAL, authenticate_as

    if ring.dev_mode:
        # Development mode (no keys exist): SDK clients always send *some* key (the SDKs
        # require one), so the doors ignore it instead of rejecting it.
        request.state.principal = DEV_PRINCIPAL
        request.state.tenant = DEV_PRINCIPAL.tenant
        return
    authorization = request.headers.get("authorization")
    if authorization is None and x_api_key and request.headers.get("x-api-key"):
        authorization = f"Bearer {request.headers['x-api-key']}"
    await authenticate_as(request, authorization)


async def unless_client_leaves(
    request: Request, gateway: Gateway, body: dict[str, Any],
    wire: Callable[[], Wire] | None = None,
) -> Answer | StreamAnswer | None:
    """The gateway's answer, or None if the client disconnected first: then the gateway
    is cancelled where it waits (the upstream call in flight), which it records."""
    task = asyncio.current_task()
    left = False

    async def watch() -> None:
        # The body has been read: what the server says next is that the client left.
        nonlocal left
        while (await request.receive())["type"] != "http.disconnect":
            pass
        left = True
        if task is not None:
            task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await gateway.chat(body, tenant=getattr(request.state, "tenant", None),
                                  user_key=getattr(request.state, "user_key", None),
                                  wire=wire)
    except asyncio.CancelledError:
        if not left:
            raise  # the server's own cancellation (shutdown)
        if sys.version_info >= (3, 11) and task is not None:
            task.uncancel()
        return None
    finally:
        watcher.cancel()


class EventStream(StreamingResponse):
    """SSE pass-through that lets the gateway clean up even if the body never starts."""

    def __init__(self, answer: StreamAnswer) -> None:
        super().__init__(answer.events, media_type="text/event-stream",
                         headers={**answer.headers, "cache-control": "no-cache",
                                  "x-accel-buffering": "no"})
        self._abandon = answer.abandon

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._abandon()
