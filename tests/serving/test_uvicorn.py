"""End to end: `routebandit serve` as a real process on 127.0.0.1 with a SQLite file,
killed (SIGKILL) in the middle of learning and restarted."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.clients: list[httpx.Client] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> httpx.Client:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ROUTEBANDIT_CHECKPOINT_EVERY": "10",
               "ROUTEBANDIT_CHECKPOINT_INTERVAL_S": "3600"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving.cli", "serve", "--port", str(self.port),
             "--data-dir", str(self.data_dir), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        client = httpx.Client(base_url=self.url, timeout=10)
        self.clients.append(client)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if client.get("/readyz").status_code == 200:
                    return client
            except httpx.TransportError:
                time.sleep(0.05)
        self.kill()
        raise AssertionError("the server did not become ready")

    def kill(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        out, _ = self.proc.communicate(timeout=10)
        return out.decode(errors="replace")

    def stop(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=20)
        return out.decode(errors="replace")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    yield s
    for client in s.clients:
        client.close()
    if s.proc is not None and s.proc.poll() is None:
        s.kill()


def learned(client: httpx.Client, n: int) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while True:
        state: dict[str, object] = client.get("/v1/policy").json()
        if state["n_learned"] == n or time.monotonic() > deadline:
            return state
        time.sleep(0.02)


def db_count(data_dir: Path, table: str) -> int:
    with sqlite3.connect(data_dir / "routebandit.db") as conn:
        return int(conn.execute(f"select count(*) from {table}").fetchone()[0])


def test_crash_in_the_middle_of_learning_loses_and_repeats_nothing(server: Server) -> None:
    client = server.start()
    ids = []
    for i in range(45):
        r = client.post("/v1/route", json={"prompt": f"question number {i} about python"})
        assert r.status_code == 200
        ids.append(r.json()["decision_id"])
        fb = client.post("/v1/feedback", json={"decision_id": ids[-1], "score": (i % 5) / 4})
        assert fb.status_code == 200 and fb.json()["duplicate"] is False
    state = learned(client, 45)
    assert state["n_learned"] == 45
    checkpoint = state["last_checkpoint"]
    assert isinstance(checkpoint, dict) and checkpoint["n_learned"] < 45  # some only in memory
    startup = server.kill()  # no shutdown hook runs
    client.close()
    assert "DEVELOPMENT MODE" in startup
    assert db_count(server.data_dir, "feedback") == 45

    client = server.start()
    state = client.get("/v1/policy").json()
    assert state["n_learned"] == 45 and state["uncheckpointed"] == 0
    assert db_count(server.data_dir, "learn_log") == 45  # each feedback learned exactly once
    for i, decision_id in enumerate(ids[:5]):  # repeats after the restart: stored once
        r = client.post("/v1/feedback", json={"decision_id": decision_id, "score": (i % 5) / 4})
        assert r.status_code == 200 and r.json()["duplicate"] is True
    for i in range(5):
        did = client.post("/v1/route", json={"prompt": f"after {i}"}).json()["decision_id"]
        assert client.post("/v1/feedback", json={"decision_id": did, "score": 1}).status_code == 200
    assert learned(client, 50)["n_learned"] == 50
    server.stop()  # a clean stop checkpoints what was learned
    client.close()
    assert db_count(server.data_dir, "learn_log") == 50
    assert db_count(server.data_dir, "decisions") == 50
