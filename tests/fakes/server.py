"""Serve an ASGI app with uvicorn in a background thread on 127.0.0.1 (tests only)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """``start``/``stop`` a uvicorn server; the port is kept so a test can restart it."""

    def __init__(self, app: Any, *, port: int | None = None, lifespan: str = "on") -> None:
        self.app = app
        self.port = port or free_port()
        self.lifespan = lifespan
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                log_level="critical", lifespan=self.lifespan,
                                timeout_graceful_shutdown=1, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True,
                                        name=f"uvicorn-{self.port}")
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"server did not start on port {self.port}")
            time.sleep(0.005)

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"server on port {self.port} did not stop")
        self._server = None
        self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None
