"""Benchmark the gateway against a fake OpenAI-compatible upstream, all on 127.0.0.1.

One run measures, with the same upstream and the same load generator:

* added latency at concurrency 1: routebandit vs calling the upstream directly (p50, p99),
  requests interleaved one by one so drift hits every target alike (the bare pass-through
  is measured too, to show what any FastAPI + httpx hop costs on this machine);
* throughput at concurrency 32 of routebandit (``routebandit serve`` with an API key:
  routing, logging and auth included), of a bare FastAPI + httpx pass-through with no
  routing, and of the LiteLLM proxy (one worker) when it is installed (``--litellm
  PATH``, in its own virtualenv, never the project's), rounds alternating;
* each server's CPU milliseconds per request under that load, which a shared machine's
  load moves much less than the rates (its inverse is the capacity of one core).

Targets (issue 4): added p50 <= 2 ms and p99 <= 10 ms; throughput >= 0.7x the bare
pass-through and >= 5x LiteLLM.

    python benchmarks/bench_gateway.py --litellm /tmp/litellm-venv/bin/litellm

Every server is its own process (uvicorn, one worker, uvloop + httptools where present).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# At module level: FastAPI resolves the handler's string annotations in these globals.
from fastapi import Request

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BODY = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Explain in two sentences why the sky is blue, and "
                                    "mention Rayleigh scattering."},
    ],
    "max_tokens": 64,
}
ANSWER = ("The sky looks blue because air molecules scatter short blue wavelengths of "
          "sunlight far more than red ones. This is Rayleigh scattering.")


# -- servers (each run in a subprocess with --serve) -------------------------------------
def upstream_app() -> Any:
    """A minimal, fast OpenAI-compatible upstream (raw ASGI), so it is never the bottleneck."""
    words = ANSWER.split(" ")

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
        req = json.loads(body) if body else {}
        prompt = sum(3 + len(str(m.get("content", "")).split())
                     for m in req.get("messages", []))
        usage = {"prompt_tokens": prompt, "completion_tokens": len(words),
                 "total_tokens": prompt + len(words)}
        model = req.get("model", "fake")
        base = {"id": "chatcmpl-bench", "created": int(time.time()), "model": model}
        if not req.get("stream"):
            out = json.dumps({**base, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": ANSWER}}]}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(out)).encode())]})
            await send({"type": "http.response.body", "body": out})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for i, w in enumerate(words):
            chunk = {**base, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {"content": w if i == 0 else " " + w},
                 "finish_reason": None}]}
            await send({"type": "http.response.body", "more_body": True,
                        "body": b"data: " + json.dumps(chunk).encode() + b"\n\n"})
        tail = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
        await send({"type": "http.response.body", "more_body": True,
                    "body": b"data: " + json.dumps(tail).encode() + b"\n\ndata: [DONE]\n\n"})
        await send({"type": "http.response.body", "body": b""})

    return app


def bare_app(upstream: str) -> Any:
    """The baseline: FastAPI + httpx forwarding the body, no routing, no measuring."""
    from contextlib import asynccontextmanager

    import httpx
    from fastapi import FastAPI
    from fastapi.responses import Response

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
        r = await state["client"].post(f"{upstream}/chat/completions",
                                       content=json.dumps(body).encode(),
                                       headers={"content-type": "application/json"})
        return Response(r.content, status_code=r.status_code, media_type="application/json")

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
        env["ROUTEBANDIT_GATEWAY_TRANSPORT"] = transport
    # With API keys the egress policy admits public upstreams only: the fake is local.
    env["ROUTEBANDIT_GATEWAY_UPSTREAM_ALLOW"] = '["127.0.0.1"]'
    return Proc("gateway", args, port, "/", env=env)


def start_self(kind: str, upstream: str) -> Proc:
    port = free_port()
    args = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--port",
            str(port), "--upstream", upstream]
    return Proc(kind, args, port, "/")


def start_litellm(binary: str, upstream: str, workdir: str, master_key: str) -> Proc:
    port = free_port()
    config = Path(workdir) / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: auto\n"
        "    litellm_params:\n"
        "      model: openai/fake\n"
        f"      api_base: {upstream}\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
    )
    env = {"LITELLM_MASTER_KEY": master_key,
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"}
    return Proc("litellm", [binary, "--config", str(config), "--host", "127.0.0.1",
                            "--port", str(port), "--num_workers", "1"],
                port, "/health/liveliness", env=env, timeout=180.0)


# -- load ---------------------------------------------------------------------------------
def _client_factory(concurrency: int, token: str | None = None) -> Callable[[], Any]:
    try:
        import aiohttp
    except ImportError:  # fall back to httpx (slower, so it flatters every target alike)
        aiohttp = None

    payload = json.dumps(BODY).encode()
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"

    if aiohttp is not None:
        class AioClient:
            def __init__(self) -> None:
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=concurrency * 2), headers=headers)

            async def post(self, url: str) -> int:
                async with self.session.post(url, data=payload) as r:
                    body = await r.read()
                    if r.status != 200:
                        self.last_error = f"{r.status} {body[:300]!r}"
                    return r.status

            async def close(self) -> None:
                await self.session.close()

        return AioClient

    import httpx

    class HttpxClient:
        def __init__(self) -> None:
            self.client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=concurrency * 2), headers=headers,
                timeout=60)

        async def post(self, url: str) -> int:
            r = await self.client.post(url, content=payload)
            if r.status_code != 200:
                self.last_error = f"{r.status_code} {r.content[:300]!r}"
            return r.status_code

        async def close(self) -> None:
            await self.client.aclose()

    return HttpxClient


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


async def latency(direct: str, gateway: str, bare: str, n: int, warmup: int,
                  token: str | None, servers: dict[str, Proc]) -> dict[str, float]:
    """p50/p99 at concurrency 1; the three targets interleaved one request at a time.

    Also each of ``servers``' CPU milliseconds per request at concurrency 1 (background
    work included: what a request costs, whenever it is paid)."""
    client = _client_factory(1, token)()
    urls = {"direct": direct, "gateway": gateway, "bare": bare}
    times: dict[str, list[float]] = {k: [] for k in urls}
    cpu: dict[str, float] = {}
    try:
        for i in range(warmup + n):
            if i == warmup:
                cpu = {k: p.cpu_seconds() for k, p in servers.items()}
            for name, url in urls.items():
                t = time.perf_counter()
                status = await client.post(url)
                if i >= warmup:
                    times[name].append((time.perf_counter() - t) * 1000)
                if status != 200:
                    raise RuntimeError(f"{url} answered {getattr(client, 'last_error', status)}")
        await asyncio.sleep(0.5)  # let the servers' background work of the last requests end
        cpu = {k: (p.cpu_seconds() - cpu[k]) * 1000 / n for k, p in servers.items()}
    finally:
        await client.close()
    out = {f"{k}_{q}_ms": pct(v, int(q[1:])) for k, v in times.items() for q in ("p50", "p99")}
    for k, v in cpu.items():
        out[f"{k}_cpu_ms_per_request"] = v
    for q in ("p50", "p99"):
        out[f"added_{q}_ms"] = out[f"gateway_{q}_ms"] - out[f"direct_{q}_ms"]
        # what any FastAPI + httpx hop costs on this machine, for scale
        out[f"bare_added_{q}_ms"] = out[f"bare_{q}_ms"] - out[f"direct_{q}_ms"]
    return out


async def throughput(url: str, concurrency: int, duration: float, warmup: float,
                     token: str | None, server: Proc) -> tuple[float, float]:
    """Requests per second, and the server's CPU milliseconds per request."""
    client = _client_factory(concurrency, token)()
    done = errors = 0
    counting = False
    cpu = [0.0]
    stop_at = time.perf_counter() + warmup + duration

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < stop_at:
            status = await client.post(url)
            if counting:
                if status == 200:
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
        raise RuntimeError(f"{url}: {errors} failed requests under load, last: "
                           f"{getattr(client, 'last_error', '?')}")
    return done / duration, 1000 * cpu[0] / max(1, done)


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="rb-bench-")
    procs: list[Proc] = []
    out: dict[str, Any] = {"concurrency": args.concurrency, "duration_s": args.duration}
    try:
        up = start_self("upstream", "")
        procs.append(up)
        upstream = f"http://127.0.0.1:{up.port}/v1"
        rb_key = mint_key(workdir)
        gw = start_gateway(upstream, workdir, args.transport)
        out["gateway_transport"] = args.transport or "default"
        bare = start_self("bare", upstream)
        procs += [gw, bare]
        lite, lite_key = None, None
        if args.litellm and Path(args.litellm).exists():
            lite_key = "sk-" + secrets.token_hex(32)
            lite = start_litellm(args.litellm, upstream, workdir, lite_key)
            procs.append(lite)
        else:
            out["litellm"] = f"skipped: LiteLLM proxy not found at {args.litellm!r}"

        def url(p: Proc) -> str:
            return f"http://127.0.0.1:{p.port}/v1/chat/completions"

        def go(coro: Awaitable[Any]) -> Any:
            return asyncio.run(coro)  # type: ignore[arg-type]

        # The direct calls carry the key too (the fake ignores it), so both sides send
        # the same bytes.
        out["load_average_before"] = os.getloadavg()
        out["latency_c1"] = go(latency(f"{upstream}/chat/completions", url(gw), url(bare),
                                       args.requests, args.warmup_requests, rb_key,
                                       {"gateway": gw, "bare": bare}))
        rps: dict[str, list[float]] = {"gateway": [], "bare": [], "litellm": []}
        cpu: dict[str, list[float]] = {"gateway": [], "bare": [], "litellm": []}
        for _ in range(args.rounds):
            for name, p, key in (("bare", bare, None), ("gateway", gw, rb_key),
                                 ("litellm", lite, lite_key)):
                if p is not None:
                    r, c = go(throughput(url(p), args.concurrency, args.duration,
                                         args.warmup, key, p))
                    rps[name].append(r)
                    cpu[name].append(c)
        out["load_average_after"] = os.getloadavg()
        tp = {k: sum(v) / len(v) for k, v in rps.items() if v}
        out["throughput_rps"] = tp
        out["throughput_rounds"] = {k: v for k, v in rps.items() if v}
        out["ratio_vs_bare"] = tp["gateway"] / tp["bare"]
        if "litellm" in tp:
            out["ratio_vs_litellm"] = tp["gateway"] / tp["litellm"]
        # On a shared machine the rates move with everyone else's load; the server's own
        # CPU per request does much less, and its inverse is the one-core capacity.
        cms = {k: sum(v) / len(v) for k, v in cpu.items() if v}
        out["server_cpu_ms_per_request"] = cms
        out["capacity_ratio_vs_bare"] = cms["bare"] / cms["gateway"]
        if "litellm" in cms:
            out["capacity_ratio_vs_litellm"] = cms["litellm"] / cms["gateway"]
        lat = out["latency_c1"]
        out["targets"] = {
            "added_p50<=2ms": lat["added_p50_ms"] <= 2.0,
            "added_p99<=10ms": lat["added_p99_ms"] <= 10.0,
            "vs_bare>=0.7": out["ratio_vs_bare"] >= 0.7,
            "vs_litellm>=5": out.get("ratio_vs_litellm", float("nan")) >= 5.0
            if "ratio_vs_litellm" in out else "skipped",
        }
    finally:
        for p in reversed(procs):
            p.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=("upstream", "bare"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", default="")
    parser.add_argument("--litellm", default="/tmp/litellm-venv/bin/litellm",
                        help="the litellm CLI of a separate virtualenv")
    parser.add_argument("--requests", type=int, default=2000,
                        help="per target, concurrency 1")
    parser.add_argument("--warmup-requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
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
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
