"""The prompt's embedding as a feature of Vowpal Wabbit: does the replay say it helps?

Usage (from the repository root, in the project's virtualenv)::

    python benchmarks/embedding_feature_routerbench.py [--seeds 0,1,2,3,4,5,6,7]
        [--settings untemplated:product,untemplated:none,templated:product]
        [--variants off,pca16] [--scale 1] [--workers 2] [--decide-n 2000]

Issue 18, part 3. Each prompt's embedding by the service's local embedder (wordllama,
256 numbers, on the bounded head and tail of the last user turn:
:func:`serving.commands.replay.embed_table`) is compressed and added to its
:class:`~bandit.features.Context` as one more dense namespace, ``w``, crossed with the
model (``PolicyConfig(interactions=(..., "wa"))``). A variant is ``off`` (today's
features) or ``<method><dims>``:

* ``pca<k>``: the train prompts' mean taken off, then their top ``k`` principal axes
  (fitted on the train split only, never on test);
* ``rp<k>``: the train mean taken off, then a seeded Gaussian random projection to ``k``;
* ``raw``: the whole 256 numbers, train mean taken off.

Each compressed vector is scaled to unit length times ``--scale`` (as the ``e`` sketch
is unit length), rounded to 5 places; a prompt without an embedding gets no ``w``.

A setting is ``table:way``: ``untemplated`` is the RouterBench subset with the few-shot
examples cut, ``templated`` the subset as it is; ``product`` pools grades along the
service's cluster tree of the same embeddings (bandit.replay.grow_clusters, what plain
``routebandit replay`` does by default), ``none`` is the prompt alone (no kinds of
meaning). Every setting, variant and seed is the bandit half of the replay (22 cost
weights) on the test split; every variant of a seed shares the seed's tree and train
order, so the per-seed differences from ``off`` are paired.

Then the decide-time cost of the namespace: per setting, two policies (``off`` and each
variant) learn the same train stream at one cost weight, and the test prompts are
decided greedily, interleaved, with the projection of the embedding counted in the
variant's time (the embedding itself is already paid for the clusters).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from routerbench import find_subset, fmt, metrics_of
from tqdm import tqdm
from untemplated_routerbench import load_table

from bandit.features import Context
from bandit.outcomes import OutcomeTable
from bandit.policy import Policy, PolicyConfig
from bandit.replay import (
    DEFAULT_COST_WEIGHTS,
    ReplayConfig,
    clustered_contexts,
    featurize_table,
    grow_clusters,
    replay_bandit,
    replay_catalog,
    train_order,
)
from bandit.reward import RewardWeights, reward
from serving.commands.replay import embed_table

KEYS = ("cost_pct_for_95", "cost_pct_for_98", "quality_pct_at_10")
LABELS = {"cost_pct_for_95": "cost@95%q", "cost_pct_for_98": "cost@98%q",
          "quality_pct_at_10": "q@10%cost"}
#: Lower is better for the costs, higher for the quality.
BETTER = {"cost_pct_for_95": -1, "cost_pct_for_98": -1, "quality_pct_at_10": 1}
NAMESPACE = "w"
SETTINGS = ("untemplated:product", "untemplated:none", "templated:product")
BASE = PolicyConfig()
WITH_W = dataclasses.replace(BASE, interactions=(*BASE.interactions, NAMESPACE + "a"))


def projection(e: np.ndarray, train: np.ndarray, variant: str,
               *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, matrix)`` fitted on the train rows that have an embedding."""
    rows = e[train]
    rows = rows[np.abs(rows).sum(axis=1) > 0]
    mean = rows.mean(axis=0)
    if variant == "raw":
        return mean, np.eye(e.shape[1])
    k = int(variant.removeprefix("pca").removeprefix("rp"))
    if variant.startswith("pca"):
        _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
        return mean, vt[:k].T.copy()
    rng = np.random.default_rng(20261207 + seed)
    return mean, rng.standard_normal((e.shape[1], k)) / np.sqrt(k)


def project(v: np.ndarray, mean: np.ndarray, matrix: np.ndarray,
            scale: float) -> tuple[float, ...] | None:
    if not np.abs(v).sum() > 0:
        return None
    z = (v - mean) @ matrix
    norm = float(np.sqrt(z.dot(z)))
    if norm == 0.0:
        return None
    out: tuple[float, ...] = tuple((z * (scale / norm)).round(5).tolist())
    return out


def with_vector(ctx: Context, vec: tuple[float, ...] | None) -> Context:
    if vec is None:
        return ctx
    return dataclasses.replace(ctx, dense={**ctx.dense, NAMESPACE: vec})


def embedded_contexts(contexts: tuple[Context, ...], table: OutcomeTable, e: np.ndarray,
                      variant: str, scale: float) -> tuple[Context, ...]:
    mean, matrix = projection(e, table.indices("train"), variant)
    return tuple(with_vector(c, project(e[i], mean, matrix, scale))
                 for i, c in enumerate(contexts))


def load(name: str) -> tuple[OutcomeTable, np.ndarray]:
    table = load_table(name)
    return table, embed_table(table)


# table name -> (table, the service's embeddings, plain contexts)
_DATA: dict[str, tuple[OutcomeTable, np.ndarray, tuple[Context, ...]]] = {}


def _init(data: dict[str, tuple[OutcomeTable, np.ndarray]]) -> None:
    for name, (table, e) in data.items():
        _DATA[name] = (table, e, featurize_table(table))


def setting_contexts(setting: str, seed: int) -> tuple[OutcomeTable, np.ndarray,
                                                      tuple[Context, ...]]:
    name, way = setting.split(":")
    table, e, plain = _DATA[name]
    if way == "product":
        paths, _ = grow_clusters(table, e, seed=seed)
        return table, e, clustered_contexts(plain, paths)
    return table, e, plain


def run(job: tuple[str, int, str, float]) -> tuple[str, int, str, dict[str, Any]]:
    setting, seed, variant, scale = job
    table, e, ctx = setting_contexts(setting, seed)
    if variant == "off":
        contexts, policy = ctx, BASE
    else:
        contexts, policy = embedded_contexts(ctx, table, e, variant, scale), WITH_W
    config = ReplayConfig(seed=seed, policy=policy)
    t0 = time.process_time()
    points = [replay_bandit(table, contexts, cost_weight=w, config=config).point.xy
              for w in DEFAULT_COST_WEIGHTS]
    m = metrics_of(table, points).to_dict()
    return setting, seed, variant, {**{key: m[key] for key in KEYS},
                                    "cpu_s": time.process_time() - t0}


# -- decide-time cost -----------------------------------------------------------------
def decide_cost(setting: str, variants: list[str], scale: float, *, n: int,
                cost_weight: float = 0.01) -> dict[str, tuple[float, float, float]]:
    """Per variant, (p50, p99, mean) microseconds of one greedy test decision."""
    table, e, ctx = setting_contexts(setting, 0)
    weights = RewardWeights(quality=1.0, cost=cost_weight, latency=0.0)
    prepared: dict[str, tuple[Policy, Callable[[int], Context]]] = {}
    for variant in variants:
        if variant == "off":
            policy = Policy(replay_catalog(table), config=BASE, weights=weights, seed=0)
            prepared[variant] = (policy, ctx.__getitem__)
        else:
            mean, matrix = projection(e, table.indices("train"), variant)

            def with_w(i: int, mean: np.ndarray = mean,
                       matrix: np.ndarray = matrix) -> Context:
                return with_vector(ctx[i], project(e[i], mean, matrix, scale))

            policy = Policy(replay_catalog(table), config=WITH_W, weights=weights, seed=0)
            prepared[variant] = (policy, with_w)
    for policy, context_of in prepared.values():
        for i in train_order(table, 0):
            d = policy.decide(context_of(int(i)), explore=True)
            j = table.models.index(d.model)
            q, cost = float(table.quality[i, j]), float(table.cost_usd[i, j])
            policy.learn(d, reward(weights, quality=q, cost_usd=cost),
                         outcome={"quality": q, "cost_usd": cost,
                                  "output_tokens": float(table.output_chars[i, j]) / 4.0})
    rows = table.indices("test")
    times: dict[str, list[float]] = {v: [] for v in variants}
    for k in range(n):
        i = int(rows[k % len(rows)])
        for variant, (policy, context_of) in prepared.items():  # interleaved: same load
            t0 = time.perf_counter()
            policy.decide(context_of(i), explore=False)
            times[variant].append((time.perf_counter() - t0) * 1e6)
    out = {}
    for variant, ts in times.items():
        ts.sort()
        out[variant] = (ts[len(ts) // 2], ts[int(len(ts) * 0.99)], statistics.fmean(ts))
    return out


# -- report -----------------------------------------------------------------------------
def cell(values: list[float | None], key: str) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "not reached"
    miss = f" ({len(got)}/{len(values)})" if len(got) < len(values) else ""
    sd = float(np.std(got, ddof=1)) if len(got) > 1 else 0.0
    return f"{fmt(float(np.mean(got)), key)} ± {sd:.1f}{miss}"


def report(setting: str, per: dict[int, dict[str, Any]], seeds: list[int],
           variants: list[str]) -> None:
    # A run cut short (--replays FILE) has some seeds of some variants: each row says
    # which seeds it is over, and each paired difference uses the seeds both have.
    print(f"\n{setting}: mean ± sd over seeds")
    print(f"  {'variant':<10}" + "".join(f"{LABELS[key]:>22}" for key in KEYS)
          + f"{'cpu s/seed':>12}  seeds")
    for v in variants:
        have = [s for s in seeds if v in per[s]]
        if not have:
            continue
        print(f"  {v:<10}" + "".join(f"{cell([per[s][v][key] for s in have], key):>22}"
                                      for key in KEYS)
              + f"{np.mean([per[s][v]['cpu_s'] for s in have]):>12.1f}  "
              + ",".join(map(str, have)))
    for v in variants:
        both = [s for s in seeds if v in per[s] and "off" in per[s]]
        if v == "off" or not both:
            continue
        print(f"  {v} - off, paired, seeds {','.join(map(str, both))} (a negative cost or "
              "positive quality is better; t = mean / (sd / sqrt n)):")
        for key in KEYS:
            d = [None if per[s][v][key] is None or per[s]["off"][key] is None
                 else per[s][v][key] - per[s]["off"][key] for s in both]
            got = [x for x in d if x is not None]
            if len(got) > 1:
                mean, sd = float(np.mean(got)), float(np.std(got, ddof=1))
                t = mean / (sd / np.sqrt(len(got))) if sd > 0 else float("inf")
                better = sum(BETTER[key] * x > 0 for x in got)
                summary = (f"mean {mean:+.2f} ± {sd:.2f}, t {t:+.2f}, "
                           f"better in {better}/{len(got)}")
            else:
                summary = "too few seeds reach it"
            print(f"    {LABELS[key]:<10} " + " ".join(
                "  n/a" if x is None else f"{x:+5.1f}" for x in d) + f"   {summary}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7",
                        help="replay seeds (default: %(default)s)")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="table:way pairs; tables untemplated, templated; ways "
                             "product, none (default: %(default)s)")
    parser.add_argument("--variants", default="off,pca16",
                        help="off, pca<k>, rp<k> or raw (default: %(default)s)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="length of the unit vector in namespace w (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes running seeds side by side (default: %(default)s)")
    parser.add_argument("--decide-n", type=int, default=2000,
                        help="timed test decisions per variant and setting, 0 to skip "
                             "(default: %(default)s)")
    parser.add_argument("--replays", default="run",
                        help="'run', 'skip' (only the decide time) or a file of the JSON "
                             "lines a run writes to stderr, to report (default: run)")
    args = parser.parse_args(argv)
    if find_subset() is None:
        return 2
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    settings = [s for s in args.settings.split(",") if s.strip()]
    variants = [v for v in args.variants.split(",") if v.strip()]
    if "off" not in variants:
        variants.insert(0, "off")
    names = sorted({s.split(":")[0] for s in settings})
    data: dict[str, tuple[OutcomeTable, np.ndarray]] = {}
    for name in tqdm(names, file=sys.stderr, desc="tables and embeddings"):
        data[name] = load(name)
    if args.replays == "run":
        results = replays(data, settings, seeds, variants, args)
    else:
        results = {s: {seed: {} for seed in seeds} for s in settings}
        if args.replays != "skip":
            with open(args.replays, encoding="utf-8") as f:
                for row in (json.loads(line) for line in f if line.startswith("{")):
                    if row["setting"] in results and row["seed"] in seeds:
                        results[row["setting"]][row["seed"]][row["variant"]] = row
    if any(results[s][seed] for s in settings for seed in seeds):
        print(f"bandit half of the replay, {len(DEFAULT_COST_WEIGHTS)} cost weights; cost "
              "in % of the best single model's, quality in % of its quality (test split); "
              f"namespace {NAMESPACE!r} crossed with 'a', unit vectors x {args.scale:g}")
        for setting in settings:
            report(setting, results[setting], seeds, variants)
    if args.decide_n:
        _init(data)
        print(f"\ndecide time, greedy test decisions (seed 0, policy trained on train at "
              f"cost weight 0.01), n={args.decide_n} each, interleaved, load average "
              f"{os.getloadavg()[0]:.2f}; the variant's time includes its projection")
        for setting in settings:
            got = decide_cost(setting, variants, args.scale, n=args.decide_n)
            off = got["off"]
            print(f"  {setting}: " + "; ".join(
                f"{v} p50 {p50:.0f} us p99 {p99:.0f} us mean {mean:.0f} us"
                + ("" if v == "off" else f" ({mean - off[2]:+.0f} us mean)")
                for v, (p50, p99, mean) in got.items()))
    return 0


def replays(data: dict[str, tuple[OutcomeTable, np.ndarray]], settings: list[str],
            seeds: list[int], variants: list[str],
            args: argparse.Namespace) -> dict[str, dict[int, dict[str, Any]]]:
    # Variant by variant (``off`` first), each result a JSON line on stderr, so a run
    # cut short still has whole comparisons (report them with --replays FILE).
    jobs = [(s, seed, v, args.scale) for v in variants for s in settings for seed in seeds]
    results: dict[str, dict[int, dict[str, Any]]] = {
        s: {seed: {} for seed in seeds} for s in settings}
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(data,)) as pool, \
            tqdm(total=len(jobs), file=sys.stderr, unit="run", desc="replays") as bar:
        for setting, seed, variant, out in pool.map(run, jobs):
            results[setting][seed][variant] = out
            bar.write(json.dumps({"setting": setting, "seed": seed, "variant": variant,
                                  **out}), file=sys.stderr)
            bar.update(1)
    return results


if __name__ == "__main__":
    sys.exit(main())
