"""Benchmark every front door of the gateway against a fake OpenAI-compatible upstream.

Everything runs on 127.0.0.1, each server in its own process.

For each door (``chat``: ``/v1/chat/completions``; ``responses``: ``/v1/responses``;
``messages``: Anthropic's ``/v1/messages``) and each mode (``plain`` and ``stream``),
one run measures, with the same upstream and the same load generator:

* added latency at concurrency 1: routebandit's door vs the same request in chat shape
  sent to the upstream directly (p50, p99), the requests of every door of a mode
  interleaved one by one so drift hits every target alike (the chat door also through a
  bare pass-through, to show what any FastAPI + httpx hop costs on this machine); a
  stream's latency is to its last event, and what is added to its first event (when a
  reader sees the answer begin) is reported beside it;
* throughput at concurrency 32 of routebandit (``routebandit serve`` with an API key:
  routing, logging and auth included), of the LiteLLM proxy (one worker) serving the same
  door when it is installed (``--litellm PATH``, in its own virtualenv, never the
  project's) and, on the chat door, of a bare FastAPI + httpx pass-through with no
  routing; rounds alternating;
* each server's CPU milliseconds per request under that load, which a shared machine's
  load moves much less than the rates (its inverse is the capacity of one core);
* the translation's own cost, in-process and without HTTP: a door's request into the
  gateway's chat-shaped payload, and the answer back (the body, and the events of a
  typical streamed answer).

Every response is read whole and checked: status 200, the answer's text, and for a
stream its last event (``[DONE]``, ``response.completed``, ``message_stop``).

Targets (issues 4 and 21): added p50 <= 2 ms and p99 <= 10 ms; throughput >= 5x LiteLLM
serving the same door; on the chat door >= 0.7x the bare pass-through.

    python benchmarks/bench_gateway.py --litellm /tmp/litellm-venv/bin/litellm

Every server is its own process (uvicorn, one worker, uvloop + httptools where present).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# At module level: FastAPI resolves the handler's string annotations in these globals.
from fastapi import Request

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SYSTEM = "You are a helpful assistant."
PROMPT = "Explain in two sentences why the sky is blue, and mention Rayleigh scattering."
MAX_TOKENS = 64
ANSWER = ("The sky looks blue because air molecules scatter short blue wavelengths of "
          "sunlight far more than red ones. This is Rayleigh scattering.")
DOORS = ("chat", "responses", "messages")
MODES = ("plain", "stream")
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses",
         "messages": "/v1/messages"}
# What a complete stream carries last, per door (a stream cut short lacks it).
STREAM_ENDS = {"chat": b"data: [DONE]", "responses": b'"response.completed"',
               "messages": b'"message_stop"'}
ANTHROPIC_VERSION = "2023-06-01"
TARGET_P50_MS, TARGET_P99_MS, TARGET_VS_LITELLM, TARGET_VS_BARE = 2.0, 10.0, 5.0, 0.7


def door_body(door: str, stream: bool) -> dict[str, Any]:
    """The same question as each door's clients ask it (their SDKs' shapes)."""
    body: dict[str, Any]
    if door == "chat":
        body = {"model": "auto", "messages": [{"role": "system", "content": SYSTEM},
                                              {"role": "user", "content": PROMPT}],
                "max_tokens": MAX_TOKENS}
    elif door == "responses":
        body = {"model": "auto", "instructions": SYSTEM, "input": PROMPT,
                "max_output_tokens": MAX_TOKENS}
    elif door == "messages":
        body = {"model": "auto", "system": SYSTEM, "max_tokens": MAX_TOKENS,
                "messages": [{"role": "user", "content": PROMPT}]}
    else:
        raise ValueError(f"unknown door {door!r}")
    if stream:
        body["stream"] = True
    return body


def upstream_answer(model: str = "fake") -> dict[str, Any]:
    """The fake upstream's Chat Completions answer (non-streamed)."""
    prompt = sum(3 + len(text.split()) for text in (SYSTEM, PROMPT))
    words = len(ANSWER.split(" "))
    return {"id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()),
            "model": model, "usage": {"prompt_tokens": prompt, "completion_tokens": words,
                                      "total_tokens": prompt + words},
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": ANSWER}}]}


def upstream_chunks(model: str = "fake") -> list[dict[str, Any]]:
    """The fake upstream's streamed answer: a chunk per word, then the usage chunk."""
    answer = upstream_answer(model)
    base = {k: answer[k] for k in ("id", "created", "model")}
    words = ANSWER.split(" ")
    chunks: list[dict[str, Any]] = [
        {**base, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {"content": w if i == 0 else " " + w},
             "finish_reason": None}]} for i, w in enumerate(words)]
    chunks[-1]["choices"][0]["finish_reason"] = "stop"
    chunks.append({**base, "object": "chat.completion.chunk", "choices": [],
                   "usage": answer["usage"]})
    return chunks


# -- servers (each run in a subprocess with --serve) -------------------------------------
def upstream_app() -> Any:
    """A minimal, fast OpenAI-compatible upstream (raw ASGI), so it is never the bottleneck.

    It speaks Chat Completions only (404 elsewhere), as the catalog says: a proxy that
    sent another API upstream would fail here rather than be measured doing less work."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        if not scope["path"].endswith("/chat/completions"):
            out = json.dumps({"error": {"message": f"no route {scope['path']}",
                                        "type": "invalid_request_error"}}).encode()
            await send({"type": "http.response.start", "status": 404, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(out)).encode())]})
            await send({"type": "http.response.body", "body": out})
            return
        req = json.loads(body) if body else {}
        model = str(req.get("model", "fake"))
        if not req.get("stream"):
            out = json.dumps(upstream_answer(model)).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(out)).encode())]})
            await send({"type": "http.response.body", "body": out})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for chunk in upstream_chunks(model):
            await send({"type": "http.response.body", "more_body": True,
                        "body": b"data: " + json.dumps(chunk).encode() + b"\n\n"})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    return app


def bare_app(upstream: str) -> Any:
    """The baseline: FastAPI + httpx forwarding the body (streamed or not), no routing,
    no measuring."""
    from contextlib import asynccontextmanager

    import httpx
    from fastapi import FastAPI
    from fastapi.responses import Response, StreamingResponse

    state: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
        state["client"] = httpx.AsyncClient(limits=limits, timeout=60)
        yield
        await state["client"].aclose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        body["model"] = "fake"
        client = state["client"]
        up = client.build_request("POST", f"{upstream}/chat/completions",
                                  content=json.dumps(body).encode(),
                                  headers={"content-type": "application/json"})
        if not body.get("stream"):
            r = await client.send(up)
            return Response(r.content, status_code=r.status_code,
                            media_type="application/json")
        r = await client.send(up, stream=True)

        async def events() -> Any:
            try:
                async for chunk in r.aiter_raw():
                    yield chunk
            finally:
                await r.aclose()

        return StreamingResponse(events(), status_code=r.status_code,
                                 media_type="text/event-stream")

    return app


def catalog_yaml(upstream: str) -> str:
    return (
        "models:\n"
        f"  - {{name: small, base_url: '{upstream}', upstream_model: fake,"
        " input_price: 0.15, output_price: 0.6, latency_ms: 500}\n"
        f"  - {{name: large, base_url: '{upstream}', upstream_model: fake,"
        " input_price: 2.5, output_price: 10.0, latency_ms: 900}\n"
    )


def serve(kind: str, port: int, upstream: str) -> None:
    import uvicorn

    sys.path.insert(0, str(ROOT))
    app = upstream_app() if kind == "upstream" else bare_app(upstream)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- processes ---------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    def __init__(self, name: str, args: list[str], port: int, ready_path: str,
                 env: dict[str, str] | None = None, timeout: float = 120.0) -> None:
        self.name, self.port = name, port
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log",
                                               delete=False)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})},
                                     start_new_session=True)
        self._wait(ready_path, timeout)

    def _wait(self, path: str, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log.name}")
            try:
                httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=1.0)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start within {timeout:.0f}s "
                           f"(see {self.log.name})")

    def cpu_seconds(self) -> float:
        """CPU time used so far by every process of this server's session."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # the process ended meanwhile
            if int(fields[3]) == self.proc.pid:  # session id (started in a new session)
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def mint_key(workdir: str) -> str:
    """An API key for routebandit (tenant ``bench``): the benchmark runs with auth on."""
    sys.path.insert(0, str(ROOT))
    from feedback.store import Store
    from serving.auth import create_key

    store = Store(f"sqlite:///{Path(workdir) / 'routebandit.db'}")
    try:
        key, _ = create_key(store, tenant="bench")
    finally:
        store.close()
    return key


def start_gateway(upstream: str, workdir: str, transport: str | None) -> Proc:
    """routebandit as deployed: ``routebandit serve`` (create_app, store, policy, keys)."""
    catalog = Path(workdir) / "catalog.yaml"
    catalog.write_text(catalog_yaml(upstream))
    port = free_port()
    args = [sys.executable, "-m", "serving.cli", "serve", "--port", str(port),
            "--catalog", str(catalog), "--data-dir", workdir, "--log-level", "warning"]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    if transport is not None:  # else the gateway's default
        env["ROUTEBANDIT_GATEWAY__TRANSPORT"] = transport
    # With API keys the egress policy admits public upstreams only: the fake is local.
    env["ROUTEBANDIT_GATEWAY__UPSTREAM_ALLOW"] = '["127.0.0.1"]'
    return Proc("gateway", args, port, "/", env=env)


def start_self(kind: str, upstream: str) -> Proc:
    port = free_port()
    args = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--port",
            str(port), "--upstream", upstream]
    return Proc(kind, args, port, "/")


def start_litellm(binary: str, upstream: str, workdir: str, master_key: str) -> Proc:
    port = free_port()
    config = Path(workdir) / "litellm.yaml"
    # The upstream speaks Chat Completions only, and so LiteLLM translates each door into
    # it as routebandit does: ``use_chat_completions_api``, or an ``openai/`` model's
    # Responses requests go upstream as Responses requests;
    # ``use_chat_completions_url_for_anthropic_messages``, or its Messages requests go
    # through its Responses bridge (Messages -> Responses -> chat, which with 1.108.7
    # answers non-streamed requests with empty content).
    config.write_text(
        "model_list:\n"
        "  - model_name: auto\n"
        "    litellm_params:\n"
        "      model: openai/fake\n"
        f"      api_base: {upstream}\n"
        "      api_key: sk-bench\n"
        "      use_chat_completions_api: true\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
        "  use_chat_completions_url_for_anthropic_messages: true\n"
    )
    env = {"LITELLM_MASTER_KEY": master_key,
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"}
    return Proc("litellm", [binary, "--config", str(config), "--host", "127.0.0.1",
                            "--port", str(port), "--num_workers", "1"],
                port, "/health/liveliness", env=env, timeout=180.0)


def litellm_version(binary: str) -> str:
    """The LiteLLM release the CLI's own virtualenv holds."""
    python = Path(binary).parent / "python"
    try:
        out = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                              "print(m.version('litellm'))"], capture_output=True,
                             text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


# -- load ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One request, sent again and again: where, what, and how a good answer ends."""

    url: str
    payload: bytes
    headers: dict[str, str]
    stream_end: bytes | None = None  # a stream's last event must contain this

    def problem(self, status: int, body: bytes) -> str | None:
        """Why this answer is not a complete, successful one (None: it is)."""
        if status != 200:
            return f"{status} {body[:300]!r}"
        if b"Rayleigh" not in body:  # the answer's text made it through
            return f"200 without the answer's text: {body[:300]!r}"
        if self.stream_end is not None and self.stream_end not in body:
            return f"stream ended without {self.stream_end.decode()}: {body[-300:]!r}"
        return None


def door_target(base: str, door: str, stream: bool, token: str | None) -> Target:
    """A request to a server's ``door``, with the key the door's SDK would send."""
    headers = {"content-type": "application/json"}
    if door == "messages":
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if token:
            headers["x-api-key"] = token
    elif token:
        headers["authorization"] = f"Bearer {token}"
    return Target(f"{base}{PATHS[door]}", json.dumps(door_body(door, stream)).encode(),
                  headers, STREAM_ENDS[door] if stream else None)


def direct_target(upstream: str, door: str, stream: bool, token: str | None) -> Target:
    """The same question in chat shape, straight to the upstream: what the gateway's door
    adds is measured against this. It carries the key too (the fake ignores it), so both
    sides send about the same bytes."""
    body = door_body("chat", stream)
    if door != "chat":
        body = translator(door)[0](door_body(door, stream))
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return Target(f"{upstream}/chat/completions", json.dumps(body).encode(), headers,
                  STREAM_ENDS["chat"] if stream else None)


def _client_factory(concurrency: int) -> Callable[[], Any]:
    try:
        import aiohttp
    except ImportError:  # fall back to httpx (slower, so it flatters every target alike)
        aiohttp = None  # type: ignore[assignment]

    if aiohttp is not None:
        class AioClient:
            last_error = ""
            first_byte = 0.0  # perf_counter() when the last answer's body began

            def __init__(self) -> None:
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=concurrency * 2))

            async def post(self, target: Target) -> bool:
                async with self.session.post(target.url, data=target.payload,
                                             headers=target.headers) as r:
                    first = await r.content.readany()
                    self.first_byte = time.perf_counter()
                    # read() takes the rest of the body: a stream to its last event.
                    problem = target.problem(r.status, first + await r.read())
                if problem is not None:
                    self.last_error = problem
                return problem is None

            async def close(self) -> None:
                await self.session.close()

        return AioClient

    import httpx

    class HttpxClient:
        last_error = ""
        first_byte = 0.0

        def __init__(self) -> None:
            self.client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=concurrency * 2), timeout=60)

        async def post(self, target: Target) -> bool:
            body, self.first_byte = b"", 0.0
            async with self.client.stream("POST", target.url, content=target.payload,
                                          headers=target.headers) as r:
                async for part in r.aiter_raw():
                    self.first_byte = self.first_byte or time.perf_counter()
                    body += part
            problem = target.problem(r.status_code, body)
            if problem is not None:
                self.last_error = problem
            return problem is None

        async def close(self) -> None:
            await self.client.aclose()

    return HttpxClient


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


async def probe(target: Target) -> str | None:
    """One request: why it failed, or None."""
    client = _client_factory(1)()
    try:
        ok = await client.post(target)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer here
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.close()
    return None if ok else client.last_error


async def latency(targets: dict[str, Target], n: int, warmup: int,
                  servers: dict[str, tuple[Proc, int]]) -> dict[str, dict[str, float]]:
    """p50/p99 (ms) of each target at concurrency 1, the targets interleaved one request
    at a time so that drift in the machine's load hits them all alike.

    Also each of ``servers``' CPU milliseconds per request at concurrency 1 (background
    work included: what a request costs, whenever it is paid); ``servers``: name ->
    (process, requests it serves per round of the targets)."""
    client = _client_factory(1)()
    times: dict[str, list[float]] = {k: [] for k in targets}
    firsts: dict[str, list[float]] = {k: [] for k, t in targets.items() if t.stream_end}
    cpu: dict[str, float] = {}
    try:
        for i in range(warmup + n):
            if i == warmup:
                cpu = {k: p.cpu_seconds() for k, (p, _) in servers.items()}
            for name, target in targets.items():
                t = time.perf_counter()
                ok = await client.post(target)
                if i >= warmup:
                    times[name].append((time.perf_counter() - t) * 1000)
                    if name in firsts:
                        firsts[name].append((client.first_byte - t) * 1000)
                if not ok:
                    raise RuntimeError(f"{target.url} answered {client.last_error}")
        await asyncio.sleep(0.5)  # let the servers' background work of the last requests end
        cpu = {k: (p.cpu_seconds() - cpu[k]) * 1000 / (n * per_round)
               for k, (p, per_round) in servers.items()}
    finally:
        await client.close()
    out = {f"{q}_ms": {k: pct(v, int(q[1:])) for k, v in times.items()}
           for q in ("p50", "p99")}
    if firsts:  # a stream's first event: when its reader sees the answer begin
        out.update({f"first_{q}_ms": {k: pct(v, int(q[1:])) for k, v in firsts.items()}
                    for q in ("p50", "p99")})
    out["cpu_ms_per_request"] = cpu
    return out


def added(c1: dict[str, dict[str, float]], door: str) -> dict[str, float]:
    """One door's figures from the interleaved latency run: what routebandit (and on the
    chat door the bare hop) adds over the same request sent to the upstream directly."""
    out: dict[str, float] = {}
    # Whole answers (a stream to its last event), then a stream's first event.
    for q in ("p50", "p99", "first_p50", "first_p99"):
        if f"{q}_ms" not in c1:
            continue
        for who in ("direct", "gateway", "bare"):
            if f"{door}/{who}" in c1[f"{q}_ms"]:
                out[f"{who}_{q}_ms"] = c1[f"{q}_ms"][f"{door}/{who}"]
        out[f"added_{q}_ms"] = out[f"gateway_{q}_ms"] - out[f"direct_{q}_ms"]
        if f"bare_{q}_ms" in out:  # what any FastAPI + httpx hop costs here, for scale
            out[f"bare_added_{q}_ms"] = out[f"bare_{q}_ms"] - out[f"direct_{q}_ms"]
    return out


async def throughput(target: Target, concurrency: int, duration: float, warmup: float,
                     server: Proc) -> tuple[float, float]:
    """Requests per second, and the server's CPU milliseconds per request."""
    client = _client_factory(concurrency)()
    done = errors = 0
    counting = False
    cpu = [0.0]
    stop_at = time.perf_counter() + warmup + duration

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < stop_at:
            ok = await client.post(target)
            if counting:
                if ok:
                    done += 1
                else:
                    errors += 1

    async def clock() -> None:
        nonlocal counting
        await asyncio.sleep(warmup)
        cpu[0] = server.cpu_seconds()
        counting = True
        await asyncio.sleep(duration)
        cpu[0] = server.cpu_seconds() - cpu[0]

    try:
        await asyncio.gather(clock(), *(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    if errors:
        raise RuntimeError(f"{target.url}: {errors} failed requests under load, last: "
                           f"{client.last_error}")
    return done / duration, 1000 * cpu[0] / max(1, done)


# -- the translation's own cost (in-process) ----------------------------------------------
def translator(door: str) -> tuple[Any, Any, Any]:
    """A door's ``to_chat``, ``from_chat`` and stream wire class."""
    sys.path.insert(0, str(ROOT))
    from serving.doors import messages, responses

    return {"responses": (responses.to_chat, responses.from_chat, responses.ResponsesWire),
            "messages": (messages.to_chat, messages.from_chat, messages.AnthropicWire)}[door]


def _best_us(fn: Callable[[], object], n: int, repeats: int = 5,
             setup: Callable[[], object] | None = None) -> float:
    """Microseconds per call: the best of ``repeats`` loops of ``n`` (timeit's way: the
    other loops lost time to something else)."""
    best = math.inf
    for _ in range(repeats):
        if setup is not None:
            setup()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def _encode(content: Any) -> bytes:
    """What starlette's JSONResponse does to a door's answer."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


def _door_cost(door: str, n: int) -> dict[str, Any]:
    from serving.gateway import ChatWire

    answer = json.dumps(upstream_answer("small")).encode()
    chunks = upstream_chunks("small")
    plain, streamed = door_body(door, False), door_body(door, True)
    request_us: float | None = None  # chat: the body goes upstream and back as it is
    answer_us: float | None = None
    if door == "chat":
        def wire() -> Any:
            return ChatWire(client_usage=False)
    else:
        to_chat, from_chat, wire_class = translator(door)

        def wire() -> Any:
            return wire_class(streamed)
        request_us = _best_us(lambda: to_chat(plain), n)
        answer_us = _best_us(lambda: _encode(from_chat(plain, json.loads(answer))), n)
    pending: list[list[dict[str, Any]]] = []

    def fresh() -> None:
        # ChatWire edits the chunks it writes: every call gets its own, made untimed.
        pending[:] = [json.loads(json.dumps(chunks)) for _ in range(n)]

    def stream() -> None:
        w = wire()
        for chunk in pending.pop():
            w.chunk(chunk, "small")
        w.end()

    sample = wire()
    events = b"".join(filter(None, (sample.chunk(c, "small")
                                    for c in json.loads(json.dumps(chunks))))) + sample.end()
    stream_us = _best_us(stream, n, setup=fresh)
    return {"request_us": request_us, "answer_us": answer_us, "stream_us": stream_us,
            "stream_us_per_chunk": stream_us / len(chunks), "stream_bytes": len(events)}


def translation_cost(n: int) -> dict[str, Any]:
    """Per door, microseconds to translate the request into the gateway's chat payload,
    the non-streamed answer back (its JSON parsed, translated, encoded as the door's
    JSONResponse encodes it) and a typical streamed answer's events (every chunk through
    the door's wire, then its end). The chat door's row is its own pass-through (its
    stream wire included), the cost the other doors replace."""
    sys.path.insert(0, str(ROOT))
    out: dict[str, Any] = {"iterations": n, "stream_chunks": len(upstream_chunks())}
    for door in DOORS:
        out[door] = _door_cost(door, n)
    return out


# -- the run ------------------------------------------------------------------------------
def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _go(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def latency_mode(*, mode: str, args: argparse.Namespace, upstream: str,
                 servers: dict[str, tuple[Proc, str | None]]) -> dict[str, Any]:
    """Latency at c=1 of every door in one mode, all interleaved: per door the upstream
    directly, routebandit's door, and on the chat door the bare pass-through."""
    stream = mode == "stream"
    gw, rb_key = servers["gateway"]
    targets: dict[str, Target] = {}
    for door in args.doors:
        targets[f"{door}/direct"] = direct_target(upstream, door, stream, rb_key)
        targets[f"{door}/gateway"] = door_target(f"http://127.0.0.1:{gw.port}", door,
                                                 stream, rb_key)
    per_round = {"gateway": (gw, len(args.doors))}
    if "chat" in args.doors and "bare" in servers:
        bare = servers["bare"][0]
        targets["chat/bare"] = door_target(f"http://127.0.0.1:{bare.port}", "chat",
                                           stream, None)
        per_round["bare"] = (bare, 1)
    _say(f"[{mode}] latency at c=1: {args.requests} requests to each of "
         f"{', '.join(targets)}, interleaved")
    out: dict[str, Any] = {"load_average_before": os.getloadavg()}
    out.update(_go(latency(targets, args.requests, args.warmup_requests, per_round)))
    out["load_average_after"] = os.getloadavg()
    return out


def measure(*, door: str, mode: str, args: argparse.Namespace, lat: dict[str, float],
            servers: dict[str, tuple[Proc, str | None]], litellm_skip: str | None,
            ) -> dict[str, Any]:
    """One door in one mode: its latency figures, throughput at c=32, the ratios and the
    targets.

    ``servers``: name -> (process, key) of routebandit ("gateway"), the bare pass-through
    and LiteLLM, those that run; the bare one is measured on the chat door only."""
    stream = mode == "stream"
    out: dict[str, Any] = {"latency_c1": lat, "load_average_before": os.getloadavg()}
    targets = {name: (p, door_target(f"http://127.0.0.1:{p.port}", door, stream, key))
               for name, (p, key) in servers.items() if name != "bare" or door == "chat"}
    if "litellm" in targets:
        why = _go(probe(targets["litellm"][1]))
        if why is not None:
            _say(f"[{door}/{mode}] LiteLLM fails this door, comparison skipped: {why}")
            out["litellm"] = f"skipped: LiteLLM's answer: {why}"
            del targets["litellm"]
    else:
        out["litellm"] = litellm_skip
    rps: dict[str, list[float]] = {k: [] for k in targets}
    cpu: dict[str, list[float]] = {k: [] for k in targets}
    for r in range(args.rounds):
        for name, (p, target) in targets.items():
            _say(f"[{door}/{mode}] throughput at c={args.concurrency}: {name}, "
                 f"round {r + 1} of {args.rounds}")
            rate, ms = _go(throughput(target, args.concurrency, args.duration, args.warmup, p))
            rps[name].append(rate)
            cpu[name].append(ms)
    out["load_average_after"] = os.getloadavg()
    tp = {k: _mean(v) for k, v in rps.items()}
    out["throughput_rps"] = tp
    out["throughput_rounds"] = rps
    # On a shared machine the rates move with everyone else's load; the server's own CPU
    # per request does much less, and its inverse is the one-core capacity.
    cms = {k: _mean(v) for k, v in cpu.items()}
    out["server_cpu_ms_per_request"] = cms
    targets_met: dict[str, bool | str] = {
        f"added_p50<={TARGET_P50_MS:g}ms": lat["added_p50_ms"] <= TARGET_P50_MS,
        f"added_p99<={TARGET_P99_MS:g}ms": lat["added_p99_ms"] <= TARGET_P99_MS,
    }
    if "bare" in tp:
        out["ratio_vs_bare"] = tp["gateway"] / tp["bare"]
        out["capacity_ratio_vs_bare"] = cms["bare"] / cms["gateway"]
        targets_met[f"vs_bare>={TARGET_VS_BARE:g}"] = out["ratio_vs_bare"] >= TARGET_VS_BARE
    if "litellm" in tp:
        out["ratio_vs_litellm"] = tp["gateway"] / tp["litellm"]
        out["capacity_ratio_vs_litellm"] = cms["litellm"] / cms["gateway"]
        targets_met[f"vs_litellm>={TARGET_VS_LITELLM:g}"] = (
            out["ratio_vs_litellm"] >= TARGET_VS_LITELLM)
    else:
        targets_met[f"vs_litellm>={TARGET_VS_LITELLM:g}"] = "skipped"
    out["targets"] = targets_met
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="rb-bench-")
    procs: list[Proc] = []
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "concurrency": args.concurrency, "duration_s": args.duration,
                           "rounds": args.rounds, "requests_c1": args.requests,
                           "gateway_transport": args.transport or "default",
                           "load_average_before": os.getloadavg()}
    _say("translation cost, in-process")
    out["translation_us"] = translation_cost(args.translation_iterations)
    try:
        up = start_self("upstream", "")
        procs.append(up)
        upstream = f"http://127.0.0.1:{up.port}/v1"
        rb_key = mint_key(workdir)
        gw = start_gateway(upstream, workdir, args.transport)
        procs.append(gw)
        servers: dict[str, tuple[Proc, str | None]] = {"gateway": (gw, rb_key)}
        if "chat" in args.doors:
            bare = start_self("bare", upstream)
            procs.append(bare)
            servers["bare"] = (bare, None)
        litellm_skip = None
        if args.litellm and Path(args.litellm).exists():
            lite_key = "sk-" + secrets.token_hex(32)
            _say("starting LiteLLM")
            lite = start_litellm(args.litellm, upstream, workdir, lite_key)
            procs.append(lite)
            servers["litellm"] = (lite, lite_key)
            out["litellm"] = litellm_version(args.litellm)
        else:
            litellm_skip = f"skipped: LiteLLM proxy not found at {args.litellm!r}"
            out["litellm"] = litellm_skip
            _say(litellm_skip)
        out["latency_c1"], out["doors"] = {}, {}
        for mode in args.modes:
            c1 = out["latency_c1"][mode] = latency_mode(mode=mode, args=args,
                                                        upstream=upstream, servers=servers)
            for door in args.doors:
                out["doors"].setdefault(door, {})[mode] = measure(
                    door=door, mode=mode, args=args, lat=added(c1, door), servers=servers,
                    litellm_skip=litellm_skip)
    finally:
        for p in reversed(procs):
            p.stop()
    out["load_average_after"] = os.getloadavg()
    return out


# -- the summary --------------------------------------------------------------------------
def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None or math.isnan(value) else f"{value:{spec}}{suffix}"


def _mark(ok: bool | str | None) -> str:
    return {True: " ok", False: " MISS"}.get(ok, "") if isinstance(ok, bool) else ""


def summary(result: dict[str, Any]) -> str:
    """The figures as a table, each beside its target."""
    rows = [("door", "mode", "added p50 ms", "added p99 ms", "bare hop p50/p99",
             "1st event added p50/p99",
             "rb req/s", "LiteLLM req/s", "x LiteLLM", "bare req/s", "x bare",
             "CPU ms/req rb, LiteLLM")]
    for door, modes in result.get("doors", {}).items():
        for mode, m in modes.items():
            lat, tp, cms, met = (m["latency_c1"], m["throughput_rps"],
                                 m["server_cpu_ms_per_request"], m["targets"])
            ratio = m.get("ratio_vs_litellm")
            rows.append((
                door, mode,
                _fmt(lat["added_p50_ms"]) + _mark(met[f"added_p50<={TARGET_P50_MS:g}ms"]),
                _fmt(lat["added_p99_ms"]) + _mark(met[f"added_p99<={TARGET_P99_MS:g}ms"]),
                "/".join(_fmt(lat.get(f"bare_added_{q}_ms")) for q in ("p50", "p99"))
                if "bare_added_p50_ms" in lat else "-",
                "/".join(_fmt(lat.get(f"added_first_{q}_ms")) for q in ("p50", "p99"))
                if "added_first_p50_ms" in lat else "-",
                _fmt(tp["gateway"], ",.0f"), _fmt(tp.get("litellm"), ",.0f"),
                (_fmt(ratio, ".1f", "x") + _mark(met[f"vs_litellm>={TARGET_VS_LITELLM:g}"]))
                if ratio is not None else "skipped",
                _fmt(tp.get("bare"), ",.0f"), _fmt(m.get("ratio_vs_bare"), ".2f", "x"),
                ", ".join(_fmt(cms.get(k)) for k in ("gateway", "litellm"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"gateway benchmark, {result['date']}: c=1 latency added over the upstream "
             "called directly (a stream's to its last event, '1st event' to its first), "
             f"c={result['concurrency']} throughput; LiteLLM {result.get('litellm')}",
             f"targets: added p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms, "
             f"throughput >= {TARGET_VS_LITELLM:g}x LiteLLM (chat: >= {TARGET_VS_BARE:g}x "
             "bare)", ""]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for mode, c1 in result.get("latency_c1", {}).items():
        cpu = c1["cpu_ms_per_request"]
        lines.append(f"CPU ms/req at c=1, {mode}: " + ", ".join(
            f"{'rb (all doors)' if k == 'gateway' else k} {v:.2f}" for k, v in cpu.items()))
    tr = result.get("translation_us")
    if tr:
        lines += ["", f"translation's own cost, in-process (microseconds, best of 5 x "
                  f"{tr['iterations']}; a stream of {tr['stream_chunks']} chunks)", ""]
        lines.append("door       request -> chat  answer <- chat  stream events (per chunk)")
        for door in DOORS:
            if door in tr:
                d = tr[door]
                lines.append(f"{door:<10} {_fmt(d['request_us'], '.1f'):>15}  "
                             f"{_fmt(d['answer_us'], '.1f'):>14}  "
                             f"{d['stream_us']:.1f} ({d['stream_us_per_chunk']:.2f})")
        lines.append("(chat: nothing to translate; its stream row is the chat wire every "
                     "chat stream pays, the cost the other doors' wires replace)")
    return "\n".join(lines)


def _names(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"choose from {', '.join(allowed)} (comma-separated), not {text!r}")
        return names
    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=("upstream", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    parser.add_argument("--doors", type=_names(DOORS), default=list(DOORS),
                        help="comma-separated front doors (default: all: "
                        f"{','.join(DOORS)})")
    parser.add_argument("--modes", type=_names(MODES), default=list(MODES),
                        help="comma-separated modes: plain (non-streamed), stream "
                        "(default: both)")
    parser.add_argument("--litellm", default="/tmp/litellm-venv/bin/litellm",
                        help="the litellm CLI of a separate virtualenv")
    parser.add_argument("--requests", type=int, default=2000,
                        help="per target, door and mode, concurrency 1")
    parser.add_argument("--warmup-requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds per throughput measurement")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--translation-iterations", type=int, default=2000,
                        help="calls per timing loop of the in-process translation cost")
    parser.add_argument("--transport", choices=("httpx", "aiohttp"),
                        help="routebandit's upstream transport (default: the gateway's "
                        "default; the bare baseline always uses httpx)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.upstream)
        return
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    print()
    print(summary(result))
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
