"""Untemplated traffic: the bandit on the RouterBench subset with the few-shot examples cut.

Usage (from the repository root, in the project's virtualenv, with ``pip install
wordllama`` for the clusters)::

    python benchmarks/untemplated_routerbench.py [--seeds 0,1,2,3] [--clusters 0,3,6,16]
        [--workers 2]

The policy pools grades per *kind* of prompt (bandit/kinds.py): the caller's task tag,
else the prompt's template (its opening words). In the RouterBench subset every
arc-challenge and winogrande prompt opens with the same five worked examples, so each
of those tasks is one template. Free-form traffic has no such templates. This benchmark
keeps only each prompt's last paragraph (the question), so every prompt is its own
template, and measures the bandit's headline numbers (the bandit half of the replay,
22 cost weights) with

* ``0``: nothing else, the prompt alone;
* ``k > 0``: a task tag that is a cluster of the prompt's meaning: k-means with ``k``
  clusters (seeded, k-means++ start) on the ``wordllama`` embedding (256 dimensions,
  its weights ship in its wheel) of the *train* prompts, no grades looked at; every
  prompt gets its nearest cluster as ``metadata={"task": ...}``, as a front end that
  labels traffic by topic would.

It measures what clusters of meaning could give the kinds on untemplated traffic; the
service does not compute them (docs/replay.md, "Untemplated traffic"). The data is read
from ``$ROUTEBANDIT_SHARED/data/routerbench-subset/outcomes.csv``. A seed and setting
takes about 30 s of one CPU core.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from routerbench import data_path, find_subset, fmt, last_paragraph, metrics_of, wordllama_embed
from tqdm import tqdm

from bandit.features import Context, featurize, parse_request
from bandit.outcomes import OutcomeTable, load_outcomes
from bandit.replay import (
    DEFAULT_COST_WEIGHTS,
    ReplayConfig,
    replay_bandit,
)

KEYS = ("cost_pct_for_95", "cost_pct_for_98", "quality_pct_at_10", "aiq")


def untemplated(table: OutcomeTable) -> OutcomeTable:
    return dataclasses.replace(table, prompts=tuple(last_paragraph(p) for p in table.prompts))


def embed(prompts: tuple[str, ...]) -> np.ndarray:
    e = wordllama_embed(list(prompts))
    unit: np.ndarray = e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-12)
    return unit


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, iters: int = 100) -> np.ndarray:
    """Lloyd's k-means with a k-means++ start: the ``(k, d)`` centres."""
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = np.min([((x - c) ** 2).sum(axis=1) for c in centres], axis=0)
        centres.append(x[rng.choice(len(x), p=d2 / d2.sum())])
    c = np.array(centres)
    for _ in range(iters):
        label = ((x[:, None, :] - c[None]) ** 2).sum(axis=2).argmin(axis=1)
        new = np.array([x[label == j].mean(axis=0) if (label == j).any() else c[j]
                        for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return c


def contexts(table: OutcomeTable, k: int) -> tuple[Context, ...]:
    if k == 0:
        return tuple(featurize(parse_request(prompt=p)) for p in table.prompts)
    e = embed(table.prompts)
    centres = kmeans(e[table.indices("train")], k)
    label = ((e[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)
    return tuple(featurize(parse_request(prompt=p, metadata={"task": f"cluster{int(c)}"}))
                 for p, c in zip(table.prompts, label, strict=True))


_CACHE: dict[int, tuple[OutcomeTable, tuple[Context, ...]]] = {}


def run(job: tuple[int, int]) -> tuple[int, int, dict[str, float | None]]:
    k, seed = job
    if k not in _CACHE:
        table = untemplated(load_outcomes(data_path()))
        _CACHE[k] = (table, contexts(table, k))
    table, ctx = _CACHE[k]
    config = ReplayConfig(seed=seed)
    points = [replay_bandit(table, ctx, cost_weight=w, config=config).point.xy
              for w in DEFAULT_COST_WEIGHTS]
    m = metrics_of(table, points).to_dict()
    return k, seed, {key: m[key] for key in KEYS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3", help="replay seeds (default: %(default)s)")
    parser.add_argument("--clusters", default="0,3,6,16",
                        help="numbers of clusters to try; 0 = no task tag (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes running seeds side by side (default: %(default)s)")
    args = parser.parse_args(argv)
    if find_subset() is None:
        return 2
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    ks = [int(s) for s in args.clusters.split(",") if s.strip()]
    if any(k > 0 for k in ks):
        try:
            import wordllama  # noqa: F401
        except ImportError:
            print("the clusters need the wordllama package: pip install wordllama "
                  "(or --clusters 0)", file=sys.stderr)
            return 2
    jobs = [(k, s) for k in ks for s in seeds]
    results: dict[int, dict[int, dict[str, float | None]]] = {k: {} for k in ks}
    with ProcessPoolExecutor(args.workers) as pool, \
            tqdm(total=len(jobs), file=sys.stderr, unit="run", desc="untemplated replay") as bar:
        for k, seed, metrics in pool.map(run, jobs):
            results[k][seed] = metrics
            bar.update(1)
    print("untemplated RouterBench subset (the last paragraph of each prompt), bandit half "
          f"of the replay, {len(DEFAULT_COST_WEIGHTS)} cost weights, seeds {args.seeds}")
    means: dict[int, dict[str, float | None]] = {}
    for k in ks:
        means[k] = {}
        for key in KEYS:
            got = [v for v in (results[k][s][key] for s in seeds) if v is not None]
            means[k][key] = sum(got) / len(got) if got else None
    base = means.get(0)
    print(f"  {'task tag':<24} " + " ".join(f"{k:>26}" for k in KEYS))
    for k in ks:
        name = "none" if k == 0 else f"{k} clusters of meaning"
        cells = []
        for key in KEYS:
            reached = sum(results[k][s][key] is not None for s in seeds)
            cell = f"{fmt(means[k][key], key)} ({reached}/{len(seeds)})"
            mine, theirs = means[k][key], (base or {}).get(key)
            if k != 0 and mine is not None and theirs:
                cell += f" {mine / theirs:.2f}x"
            cells.append(cell)
        print(f"  {name:<24} " + " ".join(f"{c:>26}" for c in cells))
        for s in seeds:
            print(f"    seed {s:<3} " + "  ".join(
                f"{key}={fmt(results[k][s][key], key)}" for key in KEYS))
    print("  (means over the seeds that reach a figure; (n/m): how many reach it; Nx: the "
          "mean as a multiple of the same run's 'none' row)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
