"""Untemplated traffic routed by the product's own meaning: the service's embedder and tree.

Usage (from the repository root, in the project's virtualenv)::

    python benchmarks/untemplated_routerbench.py [--seeds 0,1,2,3,4,5,6,7]
        [--tables untemplated,templated] [--ways product,none] [--reference kmeans]
        [--workers 1]

The policy pools grades per *kind* of prompt (bandit/kinds.py): the caller's task tag,
else the prompt's template (its opening words), refined by clusters of meaning. In the
RouterBench subset every arc-challenge and winogrande prompt opens with the same five
worked examples, so each of those tasks is one template. Free-form traffic has none.
The ``untemplated`` table keeps only each prompt's last paragraph (the question), so
every prompt is its own template; ``templated`` is the subset as it is.

For each table, seed and way, the bandit half of the replay (22 cost weights) and its
headline numbers. The ways:

* ``product``: what ``routebandit replay`` (default ``--embedder local``) and the service
  do: each prompt embedded by serving/embedder.py's local embedder, on the text the
  service embeds (the last user turn, its first 600 and last 400 characters), through
  :func:`serving.commands.replay.embed_table`; a :class:`bandit.clusters.ClusterTree`
  with the service's defaults grown in the replay's train order, each prompt assigned
  before it is learned, test prompts assigned by the tree as train left it
  (:func:`bandit.replay.grow_clusters`). Nothing is told the number of kinds.
* ``none``: the prompt alone (``--embedder none``).
* ``kmeans`` (only with ``--reference kmeans``, a labelled REFERENCE, not the product):
  a task tag from k-means (``--k``, default 3, the number of tasks) fitted offline on the
  train prompts' wordllama embeddings of the whole prompt, as a front end outside the
  product that was told the number of kinds would label traffic.

The data is read from ``$ROUTEBANDIT_SHARED/data/routerbench-subset/outcomes.csv``. A
seed and way takes about 20-30 s of one CPU core.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from routerbench import data_path, find_subset, fmt, last_paragraph, metrics_of, wordllama_embed
from tqdm import tqdm

from bandit.features import Context, featurize, parse_request
from bandit.outcomes import OutcomeTable, load_outcomes
from bandit.policy import PolicyConfig
from bandit.replay import (
    DEFAULT_COST_WEIGHTS,
    ReplayConfig,
    cluster_report,
    clustered_contexts,
    featurize_table,
    grow_clusters,
    replay_bandit,
)
from serving.commands.replay import embed_table

KEYS = ("cost_pct_for_95", "cost_pct_for_98", "quality_pct_at_10")
LABELS = {"cost_pct_for_95": "cost@95%q", "cost_pct_for_98": "cost@98%q",
          "quality_pct_at_10": "q@10%cost"}
# The targets for the untemplated table (mean of at least 8 seeds).
TARGETS = {"cost_pct_for_95": ("<=", 21.0), "cost_pct_for_98": ("<=", 42.0),
           "quality_pct_at_10": (">=", 93.0)}
TABLES = ("untemplated", "templated")
WAYS = ("product", "none")
CLUSTER_KEYS = ("n_clusters", "n_leaves", "depth", "checkpoint_bytes", "purity",
                "purity_top", "nmi")


def untemplated(table: OutcomeTable) -> OutcomeTable:
    return dataclasses.replace(table, prompts=tuple(last_paragraph(p) for p in table.prompts))


def load_table(name: str) -> OutcomeTable:
    raw = load_outcomes(data_path())
    return untemplated(raw) if name == "untemplated" else raw


def embed(prompts: tuple[str, ...]) -> np.ndarray:
    """The REFERENCE's embedding: wordllama over the whole prompt, unit rows."""
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


def kmeans_contexts(table: OutcomeTable, e: np.ndarray, k: int) -> tuple[Context, ...]:
    centres = kmeans(e[table.indices("train")], k)
    label = ((e[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)
    return tuple(featurize(parse_request(prompt=p, metadata={"task": f"cluster{int(c)}"}))
                 for p, c in zip(table.prompts, label, strict=True))


# name -> (table, the service's embeddings, the reference's embeddings or None, contexts)
_DATA: dict[str, tuple[OutcomeTable, np.ndarray, np.ndarray | None, tuple[Context, ...]]] = {}


def _init(data: dict[str, tuple[OutcomeTable, np.ndarray, np.ndarray | None]]) -> None:
    for name, (table, product, reference) in data.items():
        _DATA[name] = (table, product, reference, featurize_table(table))


def run(job: tuple[str, str, int, int, bool, int | None]
        ) -> tuple[str, str, int, dict[str, Any]]:
    name, way, seed, k, aging, kind_memory = job
    table, product, reference, plain = _DATA[name]
    info: dict[str, Any] = {}
    if way == "product":
        paths, tree = grow_clusters(table, product, seed=seed)
        ctx = clustered_contexts(plain, paths)
        found = cluster_report(table, product, paths, tree).to_dict()
        info = {key: found[key] for key in CLUSTER_KEYS}
    elif way == "kmeans":
        assert reference is not None
        ctx = kmeans_contexts(table, reference, k)
    else:
        ctx = plain
    # Without ageing: evidence never fades and no change is detected (docs/policy.md,
    # "Adapting to change"), to measure what the ageing costs where nothing changes.
    policy = (PolicyConfig() if aging else
              PolicyConfig(kind_memory=0, estimate_memory=0, detect_changes=False))
    if kind_memory is not None:
        policy = dataclasses.replace(policy, kind_memory=kind_memory)
    config = ReplayConfig(seed=seed, policy=policy)
    points = [replay_bandit(table, ctx, cost_weight=w, config=config).point.xy
              for w in DEFAULT_COST_WEIGHTS]
    m = metrics_of(table, points).to_dict()
    return name, way, seed, {**{key: m[key] for key in KEYS}, **info}


def summary(values: list[float | None]) -> tuple[float | None, float, float, float, int]:
    """Mean, standard deviation, min and max of the values reached, and how many."""
    got = [v for v in values if v is not None]
    if not got:
        return None, 0.0, 0.0, 0.0, 0
    return float(np.mean(got)), float(np.std(got)), min(got), max(got), len(got)


def way_label(way: str, k: int) -> str:
    return {"product": "product (service embedder + tree)",
            "none": "none (the prompt alone)",
            "kmeans": f"REFERENCE k-means k={k}, offline"}[way]


def report(name: str, results: dict[str, dict[int, dict[str, Any]]], seeds: list[int],
           k: int) -> None:
    print(f"\n{name}: mean ± sd [min-max] over seeds (n that reach it / {len(seeds)})")
    print(f"  {'way':<36}" + "".join(f"{LABELS[key]:>34}" for key in KEYS))
    for way, per_seed in results.items():
        cells = []
        for key in KEYS:
            mean, sd, lo, hi, n = summary([per_seed[s][key] for s in seeds])
            cells.append(f"{fmt(mean, key)} ± {sd:.1f} [{lo:.1f}-{hi:.1f}] ({n})")
        print(f"  {way_label(way, k):<36}" + "".join(f"{c:>34}" for c in cells))
        if way == "product":
            print("    clusters (means): " + ", ".join(
                f"{key.replace('_', ' ')} {np.mean([per_seed[s][key] for s in seeds]):.3g}"
                for key in CLUSTER_KEYS if all(per_seed[s][key] is not None for s in seeds)))
        for s in seeds:
            print(f"    seed {s:<3}" + "  ".join(
                f"{LABELS[key]}={fmt(per_seed[s][key], key)}" for key in KEYS))
    if name == "untemplated" and "product" in results:
        met = []
        for key, (op, target) in TARGETS.items():
            mean = summary([results["product"][s][key] for s in seeds])[0]
            ok = mean is not None and (mean <= target if op == "<=" else mean >= target)
            met.append(f"{LABELS[key]} {op} {target:g}%: {'met' if ok else 'NOT met'}")
        print("  issue 18 targets (product): " + "; ".join(met))
    if "product" in results and "none" in results:
        print("  product - none, seed for seed: " + "; ".join(
            f"{LABELS[key]} " + " ".join(
                "n/a" if results["product"][s][key] is None or results["none"][s][key] is None
                else f"{results['product'][s][key] - results['none'][s][key]:+.1f}"
                for s in seeds) for key in KEYS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7",
                        help="replay seeds (default: %(default)s)")
    parser.add_argument("--tables", default=",".join(TABLES),
                        help="outcome tables: untemplated, templated (default: %(default)s)")
    parser.add_argument("--ways", default=",".join(WAYS),
                        help="product (the service's embedder and tree), none "
                             "(default: %(default)s)")
    parser.add_argument("--reference", choices=("kmeans",), default=None,
                        help="also run a labelled reference: kmeans = a task tag from "
                             "k-means fitted offline on the train prompts (not the product)")
    parser.add_argument("--k", type=int, default=3,
                        help="clusters of the k-means reference (default: %(default)s)")
    parser.add_argument("--kind-memory", type=int, default=None,
                        help="the policy's kind_memory (default: PolicyConfig's)")
    parser.add_argument("--no-aging", action="store_true",
                        help="turn the policy's ageing of evidence and change detection off")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes running seeds side by side (default: %(default)s)")
    args = parser.parse_args(argv)
    if find_subset() is None:
        return 2
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = [t for t in args.tables.split(",") if t.strip()]
    ways = [w for w in args.ways.split(",") if w.strip()]
    if args.reference:
        ways.append(args.reference)
    data: dict[str, tuple[OutcomeTable, np.ndarray, np.ndarray | None]] = {}
    for name in tqdm(names, file=sys.stderr, desc="tables and embeddings"):
        table = load_table(name)
        data[name] = (table, embed_table(table),
                      embed(table.prompts) if "kmeans" in ways else None)
    jobs = [(n, w, s, args.k, not args.no_aging, args.kind_memory)
            for n in names for w in ways for s in seeds]
    results: dict[str, dict[str, dict[int, dict[str, Any]]]] = {
        n: {w: {} for w in ways} for n in names}
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(data,)) as pool, \
            tqdm(total=len(jobs), file=sys.stderr, unit="run", desc="replays") as bar:
        for name, way, seed, metrics in pool.map(run, jobs):
            results[name][way][seed] = metrics
            bar.update(1)
    print(f"bandit half of the replay, {len(DEFAULT_COST_WEIGHTS)} cost weights, seeds "
          f"{','.join(map(str, seeds))}; cost in % of the best single model's, quality in % "
          "of its quality (test split)")
    for name in names:
        report(name, results[name], seeds, args.k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
