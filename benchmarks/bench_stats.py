"""Stats endpoint latency on a large decision log (target: p95 <= 500 ms each).

Fills a database with ``--rows`` decisions spread over ``--days`` days (most with an
outcome, about half with feedback; COPY on PostgreSQL, executemany on SQLite), builds
the roll-ups, then asks every ``/v1/stats/...`` endpoint of the real app (in process,
over ASGI) the dashboard's questions: the last 6 hours in 5-minute buckets (raw rows),
24 hours in hours, 7 days in 3 hours and 30 days in days, for all tenants and for one.
It prints each endpoint's p50/p95 over those calls.

    python benchmarks/bench_stats.py                       # 1M decisions, SQLite
    python benchmarks/bench_stats.py --rows 10000000 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench
    python benchmarks/bench_stats.py --keep ...            # reuse a database filled before

The decisions carry a small stand-in ``payload`` (the stats never read it; the service
writes a few KB per decision), so the files are smaller than a service's would be.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feedback.stats import Stats  # noqa: E402
from feedback.store import Store  # noqa: E402

MODELS = {  # name: (input price, output price per million tokens, typical latency ms)
    "gpt-4o-mini": (0.15, 0.6, 700), "gpt-4o": (2.5, 10.0, 1500),
    "claude-3-5-haiku": (0.8, 4.0, 800), "claude-3-5-sonnet": (3.0, 15.0, 1800),
    "llama-3.1-8b": (0.05, 0.08, 300), "llama-3.1-70b": (0.6, 0.8, 900),
    "mistral-small": (0.2, 0.6, 500), "gemini-1.5-flash": (0.08, 0.3, 600),
}
TENANTS = [f"tenant-{i}" for i in range(5)]
TASKS = [f"task-{i}" for i in range(20)]
STATUSES = ["ok"] * 95 + ["error"] * 3 + ["rejected", "cancelled"]
WINDOWS = [("6h", "5m"), ("24h", "1h"), ("7d", "3h"), ("30d", "1d")]
ENDPOINTS = ["traffic", "kinds", "feedback", "spend", "latency", "errors", "exploration",
             "versions", "learner"]


def _pmfs(rng: random.Random, n: int = 64) -> list[list[tuple[str, float]]]:
    names = list(MODELS)
    out = []
    for _ in range(n):
        w = [rng.random() ** 3 for _ in names]
        total = sum(w)
        out.append([(m, x / total) for m, x in zip(names, w, strict=True)])
    return out


def rows(n: int, days: int, seed: int, now: datetime) -> Iterator[tuple[list[object], ...]]:
    """(decision, outcome or None, feedback or None) column lists, oldest first."""
    rng = random.Random(seed)
    pmfs = _pmfs(rng)
    pmf_json = [json.dumps([[m, round(p, 6)] for m, p in pmf]) for pmf in pmfs]
    start = now.timestamp() - days * 86400
    step = days * 86400 / n
    weights = json.dumps({"quality": 1.0, "cost": 0.05, "latency": 0.0})
    for i in range(n):
        t = start + (i + rng.random()) * step
        ms = int(t * 1000)
        did = f"{ms:012x}{i:020x}"
        at = datetime.fromtimestamp(t, timezone.utc)
        k = rng.randrange(len(pmfs))
        pmf = pmfs[k]
        r, acc, index = rng.random(), 0.0, len(pmf) - 1
        for j, (_, p) in enumerate(pmf):
            acc += p
            if r < acc:
                index = j
                break
        model, prob = pmf[index]
        u = rng.random()
        kind = "policy" if u < 0.95 else "failover" if u < 0.98 else \
            "forced" if u < 0.99 else "shadow"
        if kind != "policy" and kind != "shadow":
            prob = 1.0
        version = f"v{1 + int((t - start) / (days * 86400) * 12)}"
        task = rng.choice(TASKS) if rng.random() < 0.8 else None
        decision = [did, at, rng.choice(TENANTS), task, kind, model, prob, pmf_json[k],
                    version, "f1", weights, '{"bench": true}']
        outcome = feedback = None
        if kind != "shadow" and rng.random() < 0.9:
            p_in, p_out, lat = MODELS[model]
            latency = lat * rng.lognormvariate(0, 0.5)
            tin, tout = rng.randint(20, 4000), rng.randint(5, 1200)
            outcome = [did, at + timedelta(milliseconds=latency), latency, latency * 0.25,
                       tin, tout, False, (tin * p_in + tout * p_out) / 1e6,
                       rng.choice(STATUSES)]
        if kind != "shadow" and rng.random() < 0.5:
            score = rng.random()
            feedback = [did, decision[2], at + timedelta(seconds=rng.expovariate(1 / 600)),
                        score, score - 0.05, 0.001, 900.0]
        yield decision, outcome, feedback


DECISION_COLS = ("id, created_at, tenant, task, kind, model, probability, pmf, "
                 "policy_version, feature_version, weights, payload")
OUTCOME_COLS = ("decision_id, created_at, latency_ms, ttft_ms, input_tokens, output_tokens, "
                "tokens_estimated, cost_usd, status")
FEEDBACK_COLS = ("decision_id, tenant, created_at, score, reward, reward_cost_usd, "
                 "reward_latency_ms")


def fill(store: Store, n: int, days: int, seed: int, now: datetime) -> float:
    started = time.perf_counter()
    if store.dialect == "postgresql":
        _fill_postgres(store, n, days, seed, now)
    else:
        _fill_sqlite(store, n, days, seed, now)
    return time.perf_counter() - started


def _fill_sqlite(store: Store, n: int, days: int, seed: int, now: datetime) -> None:
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA synchronous=OFF")

        def ts(x: datetime) -> str:
            return x.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")

        batch: tuple[list[object], list[object], list[object]] = ([], [], [])
        for decision, outcome, feedback in rows(n, days, seed, now):
            decision[1] = ts(decision[1])  # type: ignore[arg-type]
            batch[0].append(decision)
            if outcome is not None:
                outcome[1] = ts(outcome[1])  # type: ignore[arg-type]
                batch[1].append(outcome)
            if feedback is not None:
                feedback[2] = ts(feedback[2])  # type: ignore[arg-type]
                batch[2].append(feedback)
            if len(batch[0]) >= 50_000:
                _sqlite_batch(cur, batch)
                raw.commit()
                batch = ([], [], [])
        _sqlite_batch(cur, batch)
        raw.commit()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def _sqlite_batch(cur: object, batch: tuple[list[object], ...]) -> None:
    for table, cols, data in (("decisions", DECISION_COLS, batch[0]),
                              ("outcomes", OUTCOME_COLS, batch[1]),
                              ("feedback", FEEDBACK_COLS, batch[2])):
        marks = ", ".join("?" for _ in cols.split(","))
        cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})",  # type: ignore[attr-defined]
                        data)


def _fill_postgres(store: Store, n: int, days: int, seed: int, now: datetime) -> None:
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        buffers = [io.StringIO(), io.StringIO(), io.StringIO()]
        count = 0

        def text(v: object) -> str:
            if v is None:
                return "\\N"
            if isinstance(v, datetime):
                return v.isoformat()
            return str(v).replace("\\", "\\\\")

        def flush() -> None:
            for table, cols, buf in (("decisions", DECISION_COLS, buffers[0]),
                                     ("outcomes", OUTCOME_COLS, buffers[1]),
                                     ("feedback", FEEDBACK_COLS, buffers[2])):
                with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                    copy.write(buf.getvalue())
                buf.seek(0)
                buf.truncate()
            raw.commit()

        for decision, outcome, feedback in rows(n, days, seed, now):
            buffers[0].write("\t".join(map(text, decision)) + "\n")
            if outcome is not None:
                buffers[1].write("\t".join(map(text, outcome)) + "\n")
            if feedback is not None:
                buffers[2].write("\t".join(map(text, feedback)) + "\n")
            count += 1
            if count % 200_000 == 0:
                flush()
                print(f"  {count:,} decisions", file=sys.stderr, flush=True)
        flush()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def catalog_file(path: Path) -> Path:
    """The benchmark's models as a catalog (nothing calls them: no upstream is needed)."""
    lines = ["models:"] + [
        f"  - {{name: {m}, base_url: 'http://127.0.0.1:9/v1', input_price: {i}, "
        f"output_price: {o}, latency_ms: {lat}}}" for m, (i, o, lat) in MODELS.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def mark_learned(store: Store, catalog: Path) -> None:
    """A checkpoint that has learned every feedback, as a running service's would: the
    app then starts without re-learning millions of (stand-in) decisions."""
    from sqlalchemy import text

    from bandit.catalog import Catalog
    from bandit.policy import Policy

    if store.latest_checkpoint() is not None:
        return
    policy = Policy(Catalog.load(catalog))
    cp = store.save_checkpoint(blob=policy.to_bytes(), policy_version="v12",
                               n_learned=store.count("feedback"), reason="benchmark")
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO learn_log (feedback_seq, checkpoint_id) "
                          "SELECT seq, :cp FROM feedback").bindparams(cp=cp.id))
        conn.execute(text("UPDATE checkpoints SET last_feedback_seq = (SELECT MAX(seq) "
                          "FROM feedback) WHERE id = :cp").bindparams(cp=cp.id))


async def measure(url: str, data_dir: Path, repeat: int) -> dict[str, list[float]]:
    import httpx

    from serving.app import create_app
    from serving.settings import load_settings

    settings = load_settings(database_url=url, data_dir=str(data_dir), policy_versions=False,
                             stats_refresh_s=0, catalog=str(data_dir / "catalog.yaml"),
                             feature_key="routebandit-bench-stats-feature-key")
    app = create_app(settings)
    timings: dict[str, list[float]] = {e: [] for e in ENDPOINTS}
    per_window: dict[tuple[str, str], list[float]] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                     timeout=120) as client:
            for r in range(repeat):
                for since, bucket in WINDOWS:
                    tenant = {} if r % 2 == 0 else {"tenant": TENANTS[r % len(TENANTS)]}
                    for endpoint in ENDPOINTS:
                        params = {"since": since, "bucket": bucket, **tenant}
                        if endpoint == "spend":
                            params["reference"] = "gpt-4o"
                        started = time.perf_counter()
                        resp = await client.get(f"/v1/stats/{endpoint}", params=params)
                        timings[endpoint].append(time.perf_counter() - started)
                        per_window.setdefault((endpoint, since), []).append(
                            timings[endpoint][-1])
                        if resp.status_code != 200:
                            raise SystemExit(f"/v1/stats/{endpoint}: {resp.status_code} "
                                             f"{resp.text[:300]}")
    measure.per_window = per_window  # type: ignore[attr-defined]
    return timings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database-url", default=None,
                    help="where to build the log (default: a SQLite file in a temp dir)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="decisions (default 1M)")
    ap.add_argument("--days", type=int, default=30, help="days they span (default 30)")
    ap.add_argument("--repeat", type=int, default=6,
                    help="rounds of every window and endpoint (default 6: 24 calls each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true",
                    help="reuse the decisions already in the database (do not fill it)")
    ap.add_argument("--fill-only", action="store_true", help="fill the database and stop")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="routebandit-bench-stats-"))
    url = args.database_url or f"sqlite:///{tmp / 'stats.db'}"
    store = Store(url)
    now = datetime.now(timezone.utc)
    have = store.count("decisions")
    if not args.keep or have == 0:
        if have:
            raise SystemExit(f"{url}: holds {have:,} decisions already (use --keep or an "
                             "empty database)")
        print(f"filling {store.dialect} with {args.rows:,} decisions over {args.days} days",
              file=sys.stderr)
        seconds = fill(store, args.rows, args.days, args.seed, now)
        print(f"filled in {seconds:.0f} s", file=sys.stderr)
    if args.fill_only:
        store.close()
        return 0
    n = store.count("decisions")
    mark_learned(store, catalog_file(tmp / "catalog.yaml"))
    stats = Stats(store.engine)
    started = time.perf_counter()
    result = stats.rollup.refresh()
    build = time.perf_counter() - started
    print(f"roll-ups: {result.hours} hours and {result.days} days built in {build:.1f} s",
          file=sys.stderr)
    store.close()
    timings = asyncio.run(measure(url, tmp, args.repeat))
    print(f"\n{store.dialect}, {n:,} decisions, {args.days} days; windows "
          f"{', '.join(f'{s}/{b}' for s, b in WINDOWS)}, all tenants and one; "
          f"{len(timings['traffic'])} calls per endpoint")
    print(f"{'endpoint':<22} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    worst = 0.0
    for endpoint, ts in timings.items():
        ts = sorted(ts)
        p50 = statistics.median(ts) * 1000
        p95 = ts[max(0, int(round(0.95 * len(ts))) - 1)] * 1000
        worst = max(worst, p95)
        print(f"/v1/stats/{endpoint:<12} {p50:>8.1f} {p95:>8.1f} {ts[-1] * 1000:>8.1f}")
    print(f"worst p95: {worst:.0f} ms (target 500 ms): {'met' if worst <= 500 else 'MISSED'}")
    shutil.rmtree(tmp, ignore_errors=True)  # the catalog, the key, a default SQLite log
    per_window = measure.per_window  # type: ignore[attr-defined]
    print(f"\nmedian ms by window: {'endpoint':<12} " + " ".join(f"{s + '/' + b:>9}"
                                                            for s, b in WINDOWS))
    for endpoint in ENDPOINTS:
        cells = [statistics.median(per_window[(endpoint, s)]) * 1000 for s, _ in WINDOWS]
        print(f"{'':<20}{endpoint:<12} " + " ".join(f"{c:>9.1f}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
