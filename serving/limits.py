"""Request body size limit as plain ASGI middleware (cheap: no BaseHTTPMiddleware)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import BodyTooLargeError


class BodyLimit:
    """Answer 413 to bodies over ``max_bytes``, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(scope, send)
                    return
                break
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        await self.app(scope, limited, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        message = f"body: larger than the limit of {self.max_bytes} bytes"
        if scope.get("path", "").startswith("/v1/chat/"):  # OpenAI clients parse this shape
            error = {"message": message, "type": "invalid_request_error", "param": None,
                     "code": "request_too_large"}
        else:
            error = {"type": "payload_too_large", "field": "body", "message": message}
        body = json.dumps({"error": error}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
