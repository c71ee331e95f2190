"""CPU cost of ``POST /v1/route`` over a bare FastAPI + VW endpoint, in process.

Both ASGI apps are called directly (no sockets, no load generator), alternating short
rounds; the minimum CPU time per request of each is kept, which makes the ratio robust
to other work on the machine. It leaves out uvicorn's HTTP handling, which costs both the
same, so the real ratio (``bench_service.py``) is higher than the one printed here.

    python benchmarks/bench_route_overhead.py [--rounds 15] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_service import ROUTE_BODY, bare_app  # noqa: E402

BODY = ROUTE_BODY.encode()


def _scope() -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/route", "raw_path": b"/v1/route", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(BODY)).encode())],
    }


async def _call(app: Any) -> None:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(_scope(), receive, send)
    if status != [200]:
        raise SystemExit(f"unexpected status {status}")


async def _cpu_per_request(app: Any, n: int) -> float:
    start = time.process_time()  # all threads: includes the decision writer
    for _ in range(n):
        await _call(app)
    return (time.process_time() - start) / n * 1e6


async def main(rounds: int, requests: int) -> None:
    from serving.app import create_app
    from serving.settings import load_settings

    bare = bare_app()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(load_settings(data_dir=tmp, log_level="warning"))
        async with app.router.lifespan_context(app):
            for _ in range(100):
                await _call(bare)
                await _call(app)
            b, s = [], []
            for _ in range(rounds):
                b.append(await _cpu_per_request(bare, requests))
                s.append(await _cpu_per_request(app, requests))
    print(f"bare FastAPI+VW : {min(b):6.0f} us CPU per request (min of {rounds} rounds)")
    print(f"POST /v1/route  : {min(s):6.0f} us CPU per request, +{min(s) - min(b):.0f} us; "
          f"bare/route = {min(b) / min(s):.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--requests", type=int, default=300)
    a = ap.parse_args()
    asyncio.run(main(a.rounds, a.requests))
