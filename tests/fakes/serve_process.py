"""``routebandit serve`` as a real child process on a free 127.0.0.1 port (tests and the
soak benchmark): start, wait until ready, SIGKILL or SIGTERM, restart on the same port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

try:
    from tests.fakes.server import free_port
except ImportError:  # run from benchmarks/ as a script
    from server import free_port  # type: ignore[no-redef]

MODELS = {"cheap": (0.1, 0.4), "mid": (1.0, 4.0), "big": (10.0, 40.0)}
KEY_ENV = "FAKE_UPSTREAM_API_KEY"


def write_catalog(path: Path, base_url: str) -> Path:
    """A catalog of three models, all answered by the fake upstream at ``base_url``."""
    lines = ["models:"]
    for name, (p_in, p_out) in MODELS.items():
        lines.append(f"  - {{name: {name}, base_url: '{base_url}', api_key_env: {KEY_ENV}, "
                     f"input_price: {p_in}, output_price: {p_out}}}")
    path.write_text("\n".join(lines) + "\n")
    return path


class ServeProcess:
    """One ``routebandit serve`` child; its output goes to ``<data_dir>/serve-N.log``."""

    def __init__(self, data_dir: Path, *, port: int | None = None,
                 env: Mapping[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"serve-{self.port}-{self.starts}.log"

    def start(self, timeout: float = 60.0) -> ServeProcess:
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> ServeProcess:
        """Start the process without waiting for it to be ready."""
        self.starts += 1
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        cmd = [sys.executable, "-m", "serving.cli", "serve", "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--log-level", "warning", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"routebandit serve exited ({self.proc.returncode}):\n"
                                   + self.log_path.read_text()[-3000:])
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    self._check_owner()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError("routebandit serve did not become ready:\n"
                           + self.log_path.read_text()[-3000:])

    def _check_owner(self) -> None:
        # The port was free when it was picked, but another process can take it before
        # this one binds it: then this one exits and the other answers for it.
        pid = httpx.get(f"{self.url}/healthz", timeout=1.0).json().get("pid")
        if self.proc is not None and pid != self.proc.pid:
            self.kill()
            raise RuntimeError(f"port {self.port} is answered by another process (pid {pid}), "
                               f"not this routebandit serve (pid {self.proc.pid}):\n"
                               + self.log_path.read_text()[-3000:])

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last checkpoint, no flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (graceful: learn, write, checkpoint), SIGKILL after ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
