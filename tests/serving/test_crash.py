"""Crashes lose nothing: the real ``routebandit serve`` process under concurrent route,
chat and feedback traffic is killed with SIGKILL, restarted, and checked through the
database and the API. And a database that is briefly unreachable gives clean 503s, then
recovers without a restart."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from feedback.store import Store
from tests.databases import PG_ENV, database_url
from tests.fakes.fake_upstream import FakeUpstream
from tests.fakes.serve_process import KEY_ENV, ServeProcess, write_catalog
from tests.fakes.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

TRAFFIC_S = 2.5
WORKERS = 6


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@dataclass
class Acks:
    """What the server acknowledged, and when (monotonic seconds)."""

    decisions: dict[str, float] = field(default_factory=dict)
    feedback: dict[str, tuple[float, int]] = field(default_factory=dict)  # id -> score, seq
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _drive(url: str, acks: Acks, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=5.0) as http:
        while not stop.is_set():
            try:
                if rng.random() < 0.3:
                    r = http.post("/v1/chat/completions", json={
                        "model": "auto",
                        "messages": [{"role": "user", "content": f"chat {rng.random()}"}]})
                    if r.status_code != 200:
                        acks.errors.append(f"chat {r.status_code} {r.text[:200]}")
                        continue
                    did = r.headers["x-routebandit-decision-id"]
                else:
                    r = http.post("/v1/route", json={"prompt": f"question {rng.random()}"})
                    if r.status_code != 200:
                        acks.errors.append(f"route {r.status_code} {r.text[:200]}")
                        continue
                    did = r.json()["decision_id"]
                with acks.lock:
                    acks.decisions[did] = time.monotonic()
                if rng.random() < 0.8:
                    score = round(rng.random(), 3)
                    r = http.post("/v1/feedback", json={"decision_id": did, "score": score})
                    if r.status_code != 200:
                        acks.errors.append(f"feedback {r.status_code} {r.text[:200]}")
                        continue
                    with acks.lock:
                        acks.feedback[did] = (score, r.json()["feedback_seq"])
            except httpx.HTTPError:
                if not stop.is_set():  # the kill cuts requests in flight: expected
                    time.sleep(0.01)


def _traffic_then_kill(server: ServeProcess) -> tuple[Acks, float]:
    acks, stop = Acks(), threading.Event()
    threads = [threading.Thread(target=_drive, args=(server.url, acks, stop, i), daemon=True)
               for i in range(WORKERS)]
    for t in threads:
        t.start()
    time.sleep(TRAFFIC_S)
    killed_at = time.monotonic()
    server.kill()
    stop.set()
    for t in threads:
        t.join(10)
    return acks, killed_at


def test_sigkill_loses_nothing_acknowledged(tmp_path: Path, db_url: str,
                                             upstream: FakeUpstream) -> None:
    catalog = write_catalog(tmp_path / "catalog.yaml", upstream.base_url)
    env = {KEY_ENV: "sk-fake", "ROUTEBANDIT_CHECKPOINT_EVERY": "25",
           "ROUTEBANDIT_CHECKPOINT_INTERVAL_S": "0.5"}
    server = ServeProcess(tmp_path, env=env,
                          args=("--catalog", str(catalog), "--database-url", db_url)).start()
    try:
        acks, killed_at = _traffic_then_kill(server)
        assert not acks.errors, acks.errors[:5]
        assert len(acks.feedback) > 50, "not enough traffic to mean anything"

        store = Store(db_url)
        try:
            # Every acknowledged feedback is stored, as acknowledged.
            for did, (score, seq) in acks.feedback.items():
                rec = store.get_decision(did)
                assert rec is not None and rec.feedback is not None, did
                assert (rec.feedback.score, rec.feedback.seq) == (score, seq)
            # Decisions acknowledged more than a second before the kill are stored.
            old = [d for d, t in acks.decisions.items() if t < killed_at - 1.0]
            assert old and set(store.load_decisions(old)) == set(old)
            checkpoint = store.latest_checkpoint()
            assert checkpoint is not None, "the traffic should have checkpointed"
            unlearned = sum(1 for _ in store.unlearned())
            n_feedback = store.count("feedback")
        finally:
            store.close()

        server.start()  # same port, same database
        with httpx.Client(base_url=server.url, timeout=10.0) as http:
            state = http.get("/v1/policy").json()
            # Resumed from the last checkpoint plus exactly what it had not learned...
            assert state["n_learned"] == checkpoint.n_learned + unlearned
            # ...so every stored feedback was learned exactly once by this lineage.
            assert state["n_learned"] == n_feedback
            assert state["uncheckpointed"] == 0
            # Acknowledged feedback posted again is a duplicate, not learned again.
            did, (score, _) = next(iter(acks.feedback.items()))
            again = http.post("/v1/feedback", json={"decision_id": did, "score": score})
            assert again.status_code == 200 and again.json()["duplicate"] is True
            fresh = http.post("/v1/route", json={"prompt": "after the crash"}).json()
            r = http.post("/v1/feedback", json={"decision_id": fresh["decision_id"],
                                                "score": 1.0})
            assert r.status_code == 200 and r.json()["duplicate"] is False
        assert server.stop() in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown
        store = Store(db_url)
        try:
            assert store.count("learn_log") == store.count("feedback") == n_feedback + 1
            final = store.latest_checkpoint()
            assert final is not None and final.n_learned == n_feedback + 1
        finally:
            store.close()
    finally:
        server.kill()


@pytest.mark.postgres
def test_database_unreachable_gives_503_then_recovers(tmp_path: Path,
                                                      upstream: FakeUpstream) -> None:
    if not os.environ.get(PG_ENV):
        pytest.skip(f"needs {PG_ENV}")
    for url in database_url("postgres", tmp_path):
        real = make_url(url)
        with TcpProxy(real.host or "127.0.0.1", real.port or 5432) as proxy:
            via_proxy = real.set(host="127.0.0.1", port=proxy.port)
            catalog = write_catalog(tmp_path / "catalog.yaml", upstream.base_url)
            server = ServeProcess(
                tmp_path, env={KEY_ENV: "sk-fake", "ROUTEBANDIT_POLICY_VERSIONS": "false"},
                args=("--catalog", str(catalog), "--database-url",
                      via_proxy.render_as_string(hide_password=False))).start()
            try:
                _outage(server, proxy)
            finally:
                server.kill()


def _outage(server: ServeProcess, proxy: TcpProxy) -> None:
    with httpx.Client(base_url=server.url, timeout=15.0) as http:
        before = http.post("/v1/route", json={"prompt": "before"}).json()
        proxy.cut()
        started = time.monotonic()
        r = http.post("/v1/feedback", json={"decision_id": before["decision_id"],
                                            "score": 0.5})
        assert r.status_code == 503, r.text
        assert r.json()["error"] == {"type": "unavailable", "field": None, "retry_after": 1,
                                     "message": "the database is unavailable; try again "
                                                "shortly"}
        assert r.headers["retry-after"] == "1"
        assert time.monotonic() - started < 5, "a clean 503, not a hang"
        assert http.get("/readyz").status_code == 503
        # Routing goes on from memory; its decisions wait in the write buffer.
        during = http.post("/v1/route", json={"prompt": "during"})
        assert during.status_code == 200, during.text
        did = during.json()["decision_id"]
        assert http.get(f"/v1/decisions/{did}").status_code == 503
        chat = http.post("/v1/chat/completions", json={
            "model": "auto", "messages": [{"role": "user", "content": "during"}]})
        # The gateway answers too (its decision is buffered; the call's outcome, recorded
        # after the response, is lost while the database is down).
        assert chat.status_code == 200, chat.text
        proxy.restore()  # no restart from here on
        deadline = time.monotonic() + 15
        while http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "no recovery"
            time.sleep(0.2)
        for decision_id in (before["decision_id"], did):
            r = http.post("/v1/feedback", json={"decision_id": decision_id, "score": 0.5})
            assert r.status_code == 200, r.text
        audit = http.get(f"/v1/decisions/{did}")
        assert audit.status_code == 200 and audit.json()["feedback"]["score"] == 0.5
        deadline = time.monotonic() + 10
        while http.get("/v1/policy").json()["n_learned"] != 2:
            assert time.monotonic() < deadline, "feedback after the outage not learned"
            time.sleep(0.1)
