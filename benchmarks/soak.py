"""Soak: minutes of steady mixed traffic against ``routebandit serve``.

Starts, on 127.0.0.1, a fake OpenAI-compatible upstream and ``routebandit serve`` (each
its own process, SQLite in a temporary directory, the gateway pointed at the fake), then
sends route, chat and feedback requests at a fixed rate (open loop: a slow server does
not slow the sender) for ``--duration`` seconds. Every minute it prints the server's RSS,
p50/p99 per kind of request and the error count; at the end whether memory stayed flat.

    python benchmarks/soak.py                       # 300 s at 60 requests/s
    python benchmarks/soak.py --duration 60 --rate 100 --json out.json

The recent-decision cache is bounded (``decision_cache_size``); it is set here to
``--cache`` (default 5,000) so it fills during the first minute and what follows shows
whether anything else grows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.serve_process import KEY_ENV, ServeProcess, write_catalog  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402

PROMPTS = ["How do I reverse a list in Python?", "Prove that sqrt(2) is irrational.",
           "Translate 'good morning' into French.", "Summarise the plot of Hamlet.",
           "Write a haiku about autumn.", "What is the capital of Australia?"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Soak:
    def __init__(self, url: str, rate: float, duration: float, seed: int = 0) -> None:
        self.url = url
        self.rate = rate
        self.duration = duration
        self.rng = random.Random(seed)
        self.decisions: list[str] = []
        # minute -> kind -> latencies (ms)
        self.lat: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.errors: dict[int, int] = defaultdict(int)
        self.error_samples: list[str] = []
        self.started = 0.0

    def minute(self) -> int:
        # The last requests of the run may start a hair past its last full minute.
        last = max(0, math.ceil(self.duration / 60) - 1)
        return min(int((time.monotonic() - self.started) // 60), last)

    async def one(self, client: httpx.AsyncClient, kind: str) -> None:
        t = time.perf_counter()
        minute = self.minute()
        try:
            if kind == "route":
                r = await client.post("/v1/route", json={
                    "prompt": self.rng.choice(PROMPTS), "metadata": {"task": "soak"}})
                ok = r.status_code == 200
                if ok:
                    self.decisions.append(r.json()["decision_id"])
            elif kind == "chat":
                r = await client.post("/v1/chat/completions", json={
                    "model": "auto",
                    "messages": [{"role": "user", "content": self.rng.choice(PROMPTS)}]})
                ok = r.status_code == 200
                if ok:
                    self.decisions.append(r.headers["x-routebandit-decision-id"])
            else:
                if not self.decisions:
                    return
                did = self.decisions.pop(self.rng.randrange(len(self.decisions)))
                r = await client.post("/v1/feedback", json={
                    "decision_id": did, "score": round(self.rng.random(), 2)})
                ok = r.status_code == 200
            if not ok:
                self.errors[minute] += 1
                if len(self.error_samples) < 10:
                    self.error_samples.append(f"{kind} {r.status_code} {r.text[:200]}")
        except httpx.HTTPError as exc:
            self.errors[minute] += 1
            if len(self.error_samples) < 10:
                self.error_samples.append(f"{kind} {exc.__class__.__name__}: {exc}")
            return
        if len(self.decisions) > 10_000:
            del self.decisions[:5_000]
        self.lat[minute][kind].append((time.perf_counter() - t) * 1000)

    async def run(self, on_minute: Any) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=self.url, timeout=30, limits=limits) as client:
            self.started = time.monotonic()
            tasks: set[asyncio.Task[None]] = set()
            i, last_minute = 0, 0
            while True:
                due = self.started + i / self.rate
                now = time.monotonic()
                if now - self.started >= self.duration:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                x = self.rng.random()
                kind = "route" if x < 0.4 else "chat" if x < 0.7 else "feedback"
                task = asyncio.create_task(self.one(client, kind))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
                minute = self.minute()
                if minute != last_minute:
                    on_minute(last_minute)
                    last_minute = minute
            await asyncio.gather(*tasks)
            on_minute(last_minute)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=300.0, help="seconds (default 300)")
    ap.add_argument("--rate", type=float, default=60.0, help="requests per second")
    ap.add_argument("--cache", type=int, default=5000, help="decision_cache_size")
    ap.add_argument("--upstream-latency", type=float, default=0.02)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="routebandit-soak-"))
    up_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/fakes/fake_upstream.py"), "--port", str(up_port),
         "--latency", str(args.upstream_latency)], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    catalog = write_catalog(tmp / "catalog.yaml", f"http://127.0.0.1:{up_port}/v1")
    server = ServeProcess(tmp, env={KEY_ENV: "sk-fake",
                                    "ROUTEBANDIT_DECISION_CACHE_SIZE": str(args.cache),
                                    "ROUTEBANDIT_POLICY_VERSIONS": "false"},
                          args=("--catalog", str(catalog)))
    rows: list[dict[str, Any]] = []
    try:
        server.start()
        assert server.proc is not None
        pid = server.proc.pid
        soak = Soak(server.url, args.rate, args.duration)
        rss0 = rss_mb(pid)
        print(f"soak: {args.duration:.0f} s at {args.rate:.0f} req/s (40% route, 30% chat, "
              f"30% feedback); server RSS at start {rss0:.1f} MB", flush=True)
        print(f"{'min':>3} {'reqs':>6} {'errors':>6} {'RSS MB':>7}  "
              + "  ".join(f"{k + ' p50/p99 ms':>22}" for k in ("route", "chat", "feedback")))

        def on_minute(m: int) -> None:
            lat = soak.lat.get(m, {})
            row = {"minute": m + 1, "requests": sum(len(v) for v in lat.values()),
                   "errors": soak.errors.get(m, 0), "rss_mb": round(rss_mb(pid), 1)}
            cells = []
            for k in ("route", "chat", "feedback"):
                p50, p99 = pct(lat.get(k, []), 0.5), pct(lat.get(k, []), 0.99)
                row[f"{k}_p50_ms"], row[f"{k}_p99_ms"] = round(p50, 2), round(p99, 2)
                cells.append(f"{p50:>10.1f} /{p99:>9.1f}")
            rows.append(row)
            print(f"{row['minute']:>3} {row['requests']:>6} {row['errors']:>6} "
                  f"{row['rss_mb']:>7.1f}  " + "  ".join(cells), flush=True)

        asyncio.run(soak.run(on_minute))
        errors = sum(soak.errors.values())
        rss = [r["rss_mb"] for r in rows]
        growth = rss[-1] - rss[0] if len(rss) > 1 else 0.0
        p99s = [r["route_p99_ms"] for r in rows if not math.isnan(r["route_p99_ms"])]
        summary = {
            "duration_s": args.duration, "rate": args.rate, "errors": errors,
            "rss_start_mb": round(rss0, 1), "rss_after_first_minute_mb": rss[0],
            "rss_end_mb": rss[-1], "rss_growth_after_first_minute_mb": round(growth, 1),
            "route_p99_ms_min_max": [min(p99s), max(p99s)] if p99s else None,
            "route_p99_ms_stdev": round(statistics.pstdev(p99s), 2) if len(p99s) > 1 else 0,
            "minutes": rows, "error_samples": soak.error_samples,
        }
        print(f"errors: {errors}; RSS {rss0:.1f} MB at start, {rss[0]:.1f} after the first "
              f"minute, {rss[-1]:.1f} at the end ({growth:+.1f} MB after the first minute)")
        for sample in soak.error_samples:
            print("  ", sample)
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2))
        return 0 if errors == 0 else 1
    finally:
        server.stop()
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    sys.exit(main())
