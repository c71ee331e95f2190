"""Decision-service benchmark: ``POST /v1/route`` against a bare FastAPI + VW endpoint,
p99 at 32 connections, and ``POST /v1/feedback`` per second on SQLite.

Every server runs as one uvicorn worker on 127.0.0.1, one at a time, with the same
request; the load generator is ``wrk`` (``apt-get install -y wrk``). Every phase is
bounded in time.

    python benchmarks/bench_service.py [--duration 10] [--connections 32]
        [--embedder local|none] [--no-compare-embedder]

The service runs with ``--embedder`` (default ``local``, the service's default: every
prompt embedded by wordllama and placed in the policy's cluster tree). Unless
``--no-compare-embedder``, a second service with ``embedder=none`` runs in the same
rounds, and the embedder's own share of a route's time is printed two ways: the
difference in server CPU per request between the two services, and the embedder timed
alone in this process on the same (bounded) text.

Targets (issue 3, and issue 18 with the local embedder on): route >= 0.6x the bare
endpoint's requests/s, p99 <= 25 ms at 32 connections; feedback >= 1,000/s sustained
with SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPT = ("How do I reverse a linked list in Python without recursion? Please explain the "
          "idea first and then show a short, well commented implementation.")
ROUTE_BODY = json.dumps({"messages": [{"role": "user", "content": PROMPT}]})

ROUTE_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%(body)s]]
local out = nil
function setup(thread) thread:set("id", tostring(thread)) end
function init(args)
  if args[1] then out = io.open(args[1] .. "." .. id, "w") end
end
function response(status, headers, body)
  if out and status == 200 then
    local d = body:match('"decision_id":"(%%x+)"')
    if d then out:write(d, "\\n") end
  end
end
"""

FEEDBACK_LUA = """
local ids = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do ids[#ids + 1] = line end
end
function request()
  i = i + 1
  if i > #ids then i = 1 end
  local body = '{"decision_id":"' .. ids[i] .. '","score":0.75,"latency_ms":820,' ..
               '"input_tokens":40,"output_tokens":300}'
  return wrk.format("POST", "/v1/feedback", {["Content-Type"] = "application/json"}, body)
end
"""


# -- the bare baseline --------------------------------------------------------------------
def bare_app() -> Any:
    from fastapi import FastAPI
    from pydantic import BaseModel

    from bandit import Catalog, Policy, example_catalog_path, featurize, parse_request

    policy = Policy(Catalog.load(example_catalog_path()), seed=0)
    app = FastAPI()

    class Body(BaseModel):
        messages: list[dict[str, Any]] | None = None
        prompt: str | None = None

    async def route(body: Body) -> dict[str, Any]:
        d = policy.decide(featurize(parse_request(messages=body.messages, prompt=body.prompt)))
        return {"model": d.model, "probability": d.probability}

    route.__annotations__ = {"body": Body, "return": dict}  # a local class: resolve now
    app.post("/v1/route")(route)
    return app


def serve_bare(port: int) -> None:
    import uvicorn

    uvicorn.run(bare_app(), host="127.0.0.1", port=port, workers=1, log_level="warning",
                access_log=False)


# -- orchestration ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(kind: str, data_dir: str, *, embedder: str = "local"
          ) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if kind == "bare":
        cmd = [sys.executable, __file__, "--serve-bare", "--port", str(port)]
    else:  # exactly what `routebandit serve` runs
        cmd = [sys.executable, "-m", "serving.cli", "serve", "--port", str(port),
               "--data-dir", data_dir, "--log-level", "warning"]
        env["ROUTEBANDIT_EMBEDDER"] = embedder
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90  # a first start creates the MLflow store (seconds)
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{kind} server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux), to report CPU per request: a figure
    that, unlike requests/s, barely depends on what else the machine is running."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, script: str, *, connections: int, duration: float, threads: int = 1,
        args: list[str] | None = None, pid: int | None = None) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(duration)}s", "--latency",
           "--timeout", "5s", "-s", f.name, url]
    if args:
        cmd += ["--", *args]
    cpu0 = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    os.unlink(f.name)
    res = parse_wrk(out)
    if pid and res["requests"]:
        res["server_cpu_us_per_request"] = (cpu_seconds(pid) - cpu0) / res["requests"] * 1e6
    return res


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(out: str) -> dict[str, float]:
    res: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    if "errors" in out and not m:
        raise SystemExit(out)
    for pct in ("50", "90", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out)
        if m:
            res[f"p{pct}_ms"] = _ms(m.group(1), m.group(2))
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["errors"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Socket errors: .*", out)
    if m:
        res["socket_errors"] = float(sum(int(x) for x in re.findall(r"\d+", m.group(0))))
    return res


def count_feedback(data_dir: str) -> int:
    import sqlite3

    with sqlite3.connect(Path(data_dir) / "routebandit.db") as conn:
        return int(conn.execute("select count(*) from feedback").fetchone()[0])


def learner_progress(port: int) -> tuple[float, float]:
    """``(learning steps taken, feedback waiting to be learned)`` from ``/metrics``."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = {}
    for name in ("routebandit_learned_total", "routebandit_learn_backlog"):
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        found[name] = float(match.group(1)) if match else float("nan")
    return found["routebandit_learned_total"], found["routebandit_learn_backlog"]


def embed_alone_us(text: str, *, repeat: int = 2000) -> float:
    """Median wall time of the service's local embedder on ``text`` (it bounds it as
    in the service), in microseconds, in this process."""
    from serving.embedder import LocalEmbedder

    embedder = LocalEmbedder()
    for _ in range(50):
        embedder.embed_now(text)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        embedder.embed_now(text)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per server")
    ap.add_argument("--embedder", choices=("local", "none"), default="local",
                    help="the service's embedder (default: %(default)s, as in the service)")
    ap.add_argument("--no-compare-embedder", action="store_false", dest="compare",
                    help="do not run a second service with embedder=none beside it")
    ap.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_bare:
        serve_bare(args.port)
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk on PATH (apt-get install -y wrk)")
    c, dur = args.connections, args.duration
    route_lua = ROUTE_LUA % {"body": ROUTE_BODY}
    compare = args.compare and args.embedder != "none"
    results: dict[str, Any] = {"connections": c, "duration_s": dur, "cpus": os.cpu_count(),
                               "load_before": os.getloadavg()[0], "embedder": args.embedder}

    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as tmp_off:
        bare_proc, bare_port = start("bare", tmp)
        proc, port = start("service", tmp, embedder=args.embedder)
        off_proc = start("service", tmp_off, embedder="none") if compare else None
        ids = str(Path(tmp) / "ids")
        try:
            bare_url = f"http://127.0.0.1:{bare_port}/v1/route"
            route_url = f"http://127.0.0.1:{port}/v1/route"
            off_url = f"http://127.0.0.1:{off_proc[1]}/v1/route" if off_proc else ""
            wrk(bare_url, route_lua, connections=c, duration=2)  # warm-up
            wrk(route_url, route_lua, connections=c, duration=2)
            if off_proc:
                wrk(off_url, route_lua, connections=c, duration=2)
            # Alternate the servers so that all see the same machine load; the best
            # round of each is reported.
            bares, routes, offs = [], [], []
            for _ in range(args.rounds):
                bares.append(wrk(bare_url, route_lua, connections=c, duration=dur,
                                 pid=bare_proc.pid))
                routes.append(wrk(route_url, route_lua, connections=c, duration=dur,
                                  args=[ids], pid=proc.pid))
                if off_proc:
                    offs.append(wrk(off_url, route_lua, connections=c, duration=dur,
                                    pid=off_proc[0].pid))
            results["bare"] = max(bares, key=lambda r: r["rps"])
            results["route"] = max(routes, key=lambda r: r["rps"])
            results["rounds"] = {"bare_rps": [r["rps"] for r in bares],
                                 "route_rps": [r["rps"] for r in routes]}
            if offs:
                results["route_embedder_none"] = max(offs, key=lambda r: r["rps"])
                results["rounds"]["route_embedder_none_rps"] = [r["rps"] for r in offs]
            stop(bare_proc)
            if off_proc:
                stop(off_proc[0])
            with open(ids, "w") as all_ids:
                for part in Path(tmp).glob("ids.*"):
                    all_ids.write(part.read_text())
            n_ids = sum(1 for _ in open(ids))
            time.sleep(1.0)  # let the last decisions flush
            before = count_feedback(tmp)
            learned_before, _ = learner_progress(port)
            t0 = time.monotonic()
            fb = wrk(f"http://127.0.0.1:{port}/v1/feedback", FEEDBACK_LUA, connections=c,
                     duration=dur, args=[ids], pid=proc.pid)
            elapsed = time.monotonic() - t0
            # The learner runs beside the requests; the CPU per request above counts what
            # it learned during the phase, so say how much that was.
            learned_after, backlog = learner_progress(port)
            fb["learned"] = learned_after - learned_before
            fb["learn_backlog_after"] = backlog
            stored = count_feedback(tmp) - before
            fb["decision_ids"] = n_ids
            fb["stored"] = stored
            fb["stored_per_s"] = stored / min(elapsed, dur)
            results["feedback"] = fb
        finally:
            stop(bare_proc)
            stop(proc)
            if off_proc:
                stop(off_proc[0])

    bare, route, fb = results["bare"], results["route"], results["feedback"]
    ratio = route["rps"] / bare["rps"] if bare["rps"] else 0.0
    results["route_vs_bare"] = ratio
    if args.embedder == "local":
        results["embed_alone_us"] = embed_alone_us(PROMPT)
    print(json.dumps(results, indent=2))
    print()
    cpu = {k: results[k].get("server_cpu_us_per_request", 0.0) for k in ("bare", "route",
                                                                         "feedback")}
    # Before: what else the machine was running; after: that plus this benchmark.
    print(f"load average {results['load_before']:.1f} before, {os.getloadavg()[0]:.1f} after, "
          f"on {os.cpu_count()} CPUs")
    print(f"server CPU per request: bare {cpu['bare']:.0f} us, route {cpu['route']:.0f} us "
          f"(ratio {cpu['bare'] / cpu['route'] if cpu['route'] else 0:.2f}), "
          f"feedback {cpu['feedback']:.0f} us")
    print(f"bare FastAPI+VW     : {bare['rps']:8.0f} req/s  p99 {bare.get('p99_ms', 0):6.2f} ms")
    print(f"POST /v1/route      : {route['rps']:8.0f} req/s  p99 {route.get('p99_ms', 0):6.2f} ms"
          f"  ({ratio:.2f}x bare; target >= 0.60x, p99 <= 25 ms)")
    off = results.get("route_embedder_none")
    if off:
        print(f"  route, embedder none: {off['rps']:8.0f} req/s  p99 {off.get('p99_ms', 0):6.2f} "
              f"ms  ({off['rps'] / bare['rps'] if bare['rps'] else 0:.2f}x bare)")
    if args.embedder == "local":
        alone = results["embed_alone_us"]
        line = (f"  the embedder's own share of a route: alone {alone:.0f} us per prompt "
                f"= {alone / cpu['route'] if cpu['route'] else 0:.1%} of route's CPU per request")
        if off and off.get("server_cpu_us_per_request"):
            extra = cpu["route"] - off["server_cpu_us_per_request"]
            line += (f"; route CPU with it {cpu['route']:.0f} us, without "
                     f"{off['server_cpu_us_per_request']:.0f} us: {extra:.0f} us "
                     f"({extra / cpu['route'] if cpu['route'] else 0:.1%}; embed + cluster)")
        print(line)
    print(f"POST /v1/feedback   : {fb['rps']:8.0f} req/s  p99 {fb.get('p99_ms', 0):6.2f} ms"
          f"  ({fb['stored']} new feedback stored, {fb['stored_per_s']:.0f}/s; target >= 1000/s)")
    print(f"  learned during the feedback phase: {fb['learned']:.0f} "
          f"({fb['learn_backlog_after']:.0f} waiting at its end)")
    ok = ratio >= 0.6 and route.get("p99_ms", 1e9) <= 25 and fb["stored_per_s"] >= 1000
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
