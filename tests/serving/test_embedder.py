"""Prompt embeddings for clusters of meaning: wordllama offline, a remote endpoint over
real HTTP that answers, fails, stalls or talks nonsense, and decisions that never fail
or wait past the timeout because of either; the tree survives a restart."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bandit import Policy, RewardWeights
from bandit.catalog import Catalog
from bandit.clusters import ClusterTree
from feedback import synthetic
from feedback.store import Store
from serving import embedder as embedder_module
from serving.calls import RouteRequest
from serving.embedder import (
    HEAD_CHARS,
    TAIL_CHARS,
    Embedder,
    LocalEmbedder,
    NoEmbedder,
    OpenAIEmbedder,
    bounded,
)
from serving.routes.route import RouteOut
from serving.service import RouterService, meaning
from tests.serving.conftest import running, service_settings

DIM = 8


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    return LocalEmbedder()  # loaded once for the module (and cached for the process)


def test_the_local_embedder_loads_and_embeds_with_the_network_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    embedder_module._wordllama.cache_clear()  # really load, here, offline
    e = LocalEmbedder()
    v = e.embed_now("How do I reverse a list in Python?").vector
    assert v is not None and v.shape == (256,) and np.isfinite(v).all() and v.any()


def test_the_local_embedding_is_wordllamas(local: LocalEmbedder) -> None:
    for text in ("How do I reverse a list in Python?", "Résumé 東京 🙂", "x" * 3000):
        ours = local.embed_now(text).vector
        theirs = np.asarray(embedder_module._wordllama().embed([bounded(text)]))[0]
        assert ours is not None
        cosine = ours @ theirs / np.linalg.norm(ours) / np.linalg.norm(theirs)
        assert cosine == pytest.approx(1.0, abs=1e-6)


def test_a_local_embedder_that_cannot_read_its_weights_names_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> Any:
        raise FileNotFoundError("weights.safetensors")

    monkeypatch.setattr(embedder_module, "_wordllama", broken)
    with pytest.raises(embedder_module.EmbedderError, match="'embedder'"):
        LocalEmbedder()


def test_only_the_head_and_tail_of_a_long_text_are_embedded() -> None:
    text = "a" * HEAD_CHARS + "b" * 10_000 + "c" * TAIL_CHARS
    assert bounded(text) == "a" * HEAD_CHARS + "\n" + "c" * TAIL_CHARS
    assert bounded("short") == "short"


# -- a fake /v1/embeddings over real HTTP -------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        mode = body["model"]
        if mode == "slow":
            time.sleep(1.0)
        if mode == "500":
            self._send(500, b'{"error": "boom"}')
            return
        if mode == "malformed":
            self._send(200, b'{"data": [{"embedding": "not numbers"}]}')
            return
        if mode == "nan":
            self._send(200, b'{"data": [{"embedding": [NaN, 1.0]}]}')
            return
        text = body["input"] if isinstance(body["input"], str) else body["input"][0]
        rng = np.random.default_rng(len(text) % 3)  # three "topics" by length
        vec = rng.normal(size=DIM).tolist()
        answer = {"object": "list", "model": mode,
                  "data": [{"object": "embedding", "index": 0, "embedding": vec}],
                  "usage": {"prompt_tokens": 3, "total_tokens": 3}}
        self._send(200, json.dumps(answer).encode())

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_the_fake_endpoint_speaks_openai(fake_url: str) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=fake_url, api_key="test")
    out = client.embeddings.create(model="ok", input="hello")
    assert len(out.data[0].embedding) == DIM


async def _service(tmp_path: Path, embedder: Embedder | None, *,
                   catalog: Catalog | None = None, **kw: Any) -> RouterService:
    store = Store(f"sqlite:///{tmp_path / 'routebandit.db'}")
    catalog = catalog or synthetic.catalog()
    svc = RouterService(store=store, catalog=catalog,
                        profiles={"balanced": RewardWeights()}, default_profile="balanced",
                        embedder=embedder, flush_interval_s=0.02, **kw)
    await svc.start(lambda: Policy(catalog, seed=0))
    return svc


async def _close(svc: RouterService) -> None:
    await svc.stop()
    if svc.embedder is not None:
        await svc.embedder.aclose()
    svc.store.close()


@pytest.mark.parametrize("mode, status", [
    ("ok", "ok"), ("500", "error"), ("slow", "timeout"), ("malformed", "malformed"),
    ("nan", "malformed"),
], ids=["answers", "500", "timeout", "malformed", "nan"])
async def test_a_remote_embedder_falls_back_within_its_timeout(
    tmp_path: Path, fake_url: str, mode: str, status: str,
) -> None:
    svc = await _service(tmp_path, OpenAIEmbedder(base_url=fake_url, model=mode,
                                                  api_key="k", timeout_s=0.2))
    try:
        started = time.perf_counter()
        decision_id, d = await svc.route(RouteRequest(prompt="Write a Python function"))
        assert time.perf_counter() - started < 0.6  # never waits past the timeout
        assert d.extra["embedding"] == status
        fallbacks = svc.metrics.embed_fallbacks.labels("openai", status)._value.get()
        assert fallbacks == (0 if status == "ok" else 1)
        record = await svc.get_decision(decision_id, None)
        assert meaning(record.decision)["embedding"] == status  # in the audit record
        if status == "ok":
            assert svc.policy.clusters is not None and svc.policy.clusters.dim == DIM
    finally:
        await _close(svc)


def test_the_egress_policy_vets_the_endpoint_at_start_up(fake_url: str) -> None:
    from serving.egress import EgressPolicy
    from serving.settings import load_settings

    settings = load_settings(embedder="openai", embedder_openai={
        "base_url": fake_url, "model": "ok", "api_key_env": "DATABASE_URL"})
    with pytest.raises(embedder_module.EmbedderError, match="embedder_openai"):
        embedder_module.make_embedder(settings, egress=EgressPolicy())  # loopback refused
    with pytest.raises(embedder_module.EmbedderError, match="base_url"):
        embedder_module.make_embedder(load_settings(embedder="openai"))


async def test_an_unreachable_endpoint_is_an_error_fallback(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    svc = await _service(tmp_path, OpenAIEmbedder(
        base_url=f"http://127.0.0.1:{port}/v1", model="ok", api_key=None, timeout_s=0.2))
    try:
        _, d = await svc.route(RouteRequest(prompt="hello"))
        assert d.extra["embedding"] == "error"
    finally:
        await _close(svc)


@pytest.fixture
async def local_service(tmp_path: Path, local: LocalEmbedder) -> AsyncIterator[RouterService]:
    # Windows wide enough for a 1 MB prompt: what is tested is the embedding, not the fit.
    wide = Catalog.from_dict({"models": [{"name": n, "context_window": 10_000_000}
                                         for n in ("small", "large")]})
    svc = await _service(tmp_path, local, catalog=wide, max_prompt_chars=2_000_000)
    yield svc
    await _close(svc)


@pytest.mark.parametrize("prompt", [
    "", "   ", "😀🎉🔥" * 50, "!!! @@@ ### $$$ %%%", "x" * 1_000_000,
    "Résumé 東京 Москва مرحبا שלום 🙂 print('hi')", "\u200b\u200d\ufeff", "\ud800 lone",
], ids=["empty", "blank", "emoji", "symbols", "1MB", "mixed-scripts", "zero-width",
        "surrogate"])
async def test_bad_input_never_fails_a_decision(local_service: RouterService,
                                                prompt: str) -> None:
    started = time.perf_counter()
    _, d = await local_service.route(RouteRequest(prompt=prompt))
    assert d.model in ("small", "large")
    assert d.extra["embedding"] == ("empty" if not prompt.strip() else "ok")
    assert time.perf_counter() - started < 0.5  # the 1 MB prompt is bounded too


def _topics(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = list(synthetic.PROMPTS)[i % 3]
        text = rng.choice(synthetic.PROMPTS[kind])
        out.append(text.format(v=rng.choice(synthetic.VERBS), n=rng.randint(1, 99)))
    return out


async def test_the_tree_survives_a_restart_and_matches_a_replay(
    tmp_path: Path, local: LocalEmbedder,
) -> None:
    prompts = _topics(150, seed=7)
    svc = await _service(tmp_path, local)
    try:
        paths = [(await svc.route(RouteRequest(prompt=p)))[1].context.namespaces.get("k", ())
                 for p in prompts]
        tree = svc.policy.clusters
        assert tree is not None and len(tree) > 1  # it grew
        probes = [local.embed_now(p).vector for p in _topics(30, seed=8)]
        before = [svc.policy.cluster_path(v) for v in probes]  # type: ignore[arg-type]
        saved = tree.to_dict()
        await svc.checkpoint()
    finally:
        await _close(svc)
    assert any(paths)  # later decisions carry their clusters

    again = await _service(tmp_path, local)
    try:
        assert again.policy.clusters is not None
        # Restored without the leaves' gathered embeddings (no single prompt's embedding
        # is kept in a checkpoint): the same tree otherwise, and it assigns alike.
        assert again.policy.clusters.to_dict() == tree.to_dict(waiting=False)
        assert '"waiting": {}' not in str(saved) and any(saved["waiting"].values())
        assert not any(again.policy.clusters.to_dict()["waiting"].values())
        after = [again.policy.cluster_path(v) for v in probes]  # type: ignore[arg-type]
        assert after == before
    finally:
        await _close(again)

    # The same embeddings in the same order grow the same tree outside the service.
    replay = ClusterTree(256, seed=0)
    for p in prompts:
        v = local.embed_now(p).vector
        assert v is not None
        replay.learn_one(v)
    assert replay.to_dict() == saved


async def test_a_follower_never_grows_the_tree(tmp_path: Path, local: LocalEmbedder) -> None:
    svc = await _service(tmp_path, local)
    svc.may_grow_clusters = lambda: False
    try:
        for p in _topics(50, seed=1):
            _, d = await svc.route(RouteRequest(prompt=p))
            assert d.extra["embedding"] == "ok"
        assert svc.policy.clusters is None
    finally:
        await _close(svc)


async def test_no_embedder_marks_nothing(tmp_path: Path) -> None:
    svc = await _service(tmp_path, NoEmbedder())
    try:
        _, d = await svc.route(RouteRequest(prompt="hello", metadata={"task": "qa"}))
        assert meaning(d) == {"prompt_kind": "task=qa", "prompt_kind_source": "tag",
                              "embedding": "off"}
    finally:
        await _close(svc)


async def test_the_route_answer_and_the_audit_view_show_the_kind(
    tmp_path: Path, db_url: str, local: LocalEmbedder,
) -> None:
    async with running(service_settings(tmp_path, db_url)) as api:
        out = await api.route(prompt="Translate to French: the cheese is old")
        assert RouteOut.model_validate(out).model_dump() == out
        assert out["embedding"] == "ok"
        assert out["prompt_kind_source"] in ("template", "cluster")
        r = await api.client.get(f"/v1/decisions/{out['decision_id']}")
        audit = r.json()
        assert {k: audit[k] for k in ("prompt_kind", "prompt_kind_source", "embedding")} == {
            k: out[k] for k in ("prompt_kind", "prompt_kind_source", "embedding")}
        metrics = (await api.client.get("/metrics")).text
        assert f'routebandit_decision_kind_sources_total{{source="{out["prompt_kind_source"]}"}}' \
            in metrics
        assert "cluster=" not in metrics.split("routebandit_decision_kind_sources")[1][:400]
