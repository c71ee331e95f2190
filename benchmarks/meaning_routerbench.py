"""Free-form traffic routed by meaning: kinds from a streaming cluster tree, over seeds.

Usage (from the repository root, in the project's virtualenv, with ``pip install
wordllama``)::

    python benchmarks/meaning_routerbench.py [--seeds 0,1,2,3,4,5,6,7] [--workers 2]
        [--tables untemplated,remix,synthetic,templated] [--split-after 32] [--cap 64]

For each outcome table, each replay seed and each way of telling kinds apart, the bandit
half of the replay (22 cost weights) and its three headline numbers. The ways:

* ``none``: the prompt alone (its template is its kind, and free-form prompts have none);
* ``kmeans3``: a task tag from k-means with 3 clusters fitted offline on the train
  prompts' embeddings (benchmarks/untemplated_routerbench.py), the baseline that was told
  the number of kinds;
* ``tree``: :class:`bandit.clusters.ClusterTree` grown online, nothing told: train prompts
  in the replay's own order, each assigned as the service would (before it is learned),
  then the test prompts assigned by the tree as train left it (it no longer grows, as the
  policy no longer learns). The policy pools grades along each prompt's path of clusters,
  or by its template alone once that has enough grades (bandit.kinds);
* ``task``: the table's own task column as the caller's tag: a reference, not a router.

Tables: ``untemplated`` is the RouterBench subset with the few-shot examples cut (each
prompt its last paragraph); ``remix`` is the same without winogrande and with each
task's quality columns shuffled among the models (other kinds, other winners);
``synthetic`` is made here: six hidden topics of free-form questions, eight models whose
chance of a good answer depends on the topic; ``templated`` is the RouterBench subset as
it is (templated: must do no worse than ``none``). Embeddings (wordllama, 256
dimensions, weights from its wheel) are computed once per table. A seed and way takes
about 20 s of one core.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from routerbench import data_path, find_subset, fmt, metrics_of
from tqdm import tqdm
from untemplated_routerbench import embed, kmeans, untemplated

from bandit.features import Context, featurize, parse_request
from bandit.outcomes import OutcomeTable, load_outcomes
from bandit.replay import (
    DEFAULT_COST_WEIGHTS,
    ReplayConfig,
    clustered_contexts,
    grow_clusters,
    purity,
    replay_bandit,
)

KEYS = ("cost_pct_for_95", "cost_pct_for_98", "quality_pct_at_10")
WAYS = ("none", "kmeans3", "tree", "task")
TABLES = ("untemplated", "remix", "synthetic", "templated")

TOPICS = {
    "cooking": "recipe oven bake flour sugar garlic onion simmer sauce roast butter dough "
               "pasta spice marinade skillet broth whisk dessert knead",
    "law": "contract tenant lawsuit court judge liability clause statute attorney appeal "
           "damages plaintiff lease verdict copyright negligence testimony jury custody",
    "code": "python function loop array compile bug recursion class variable parser regex "
            "database query thread exception pointer library runtime iterator hash",
    "astronomy": "planet orbit galaxy telescope nebula comet supernova gravity moon star "
                 "eclipse asteroid cosmic redshift jupiter saturn quasar light-year",
    "medicine": "symptom fever diagnosis vaccine antibiotic blood pressure dose tumor "
                "infection allergy insulin surgery therapy chronic pulse migraine",
    "sports": "football goal tennis coach league marathon tournament referee striker "
              "penalty dribble season stadium sprint champion playoff serve",
}
OPENERS = ("Can you explain", "Quick question about", "I keep wondering about",
           "Please help me understand", "What should I know about", "Tell me about",
           "Why does", "How do people handle", "Is it true that", "Give me advice on")


def synthetic_table(n: int = 3000, *, seed: int = 0) -> OutcomeTable:
    """Six hidden topics, eight models; quality is Bernoulli with a topic-model rate."""
    rng = np.random.default_rng(seed)
    models = [f"m{j}" for j in range(8)]
    price = np.exp(rng.uniform(np.log(1e-4), np.log(5e-3), size=len(models)))
    rate = rng.beta(2.0, 2.0, size=(len(TOPICS), len(models)))
    rate[:, np.argmax(price)] = np.clip(rate.max(axis=1) + 0.05, 0, 0.97)  # dearest: best
    names = sorted(TOPICS)
    topic = rng.integers(len(names), size=n)
    prompts = []
    for t in topic:
        words = rng.choice(TOPICS[names[t]].split(), size=rng.integers(4, 9), replace=False)
        prompts.append(f"{rng.choice(OPENERS)} {' '.join(words)}?")
    size = np.array([len(p) for p in prompts], dtype=np.float64)[:, None]
    return OutcomeTable.from_rows(
        [f"syn.{i}" for i in range(n)], [names[t] for t in topic],
        ["test" if u < 0.3 else "train" for u in rng.random(n)], prompts, models,
        quality=(rng.random((n, len(models))) < rate[topic]).astype(float),
        cost_usd=price[None, :] * (1.0 + size / 100.0), output_chars=np.full(
            (n, len(models)), 400.0))


def remix_table(table: OutcomeTable, *, seed: int = 0) -> OutcomeTable:
    """Winogrande dropped; each remaining task's quality columns shuffled among models."""
    rng = np.random.default_rng(seed)
    keep = np.array([t != "winogrande" for t in table.tasks])
    quality = table.quality.copy()
    tasks = np.array(table.tasks)
    for task in sorted(set(tasks[keep])):
        rows = tasks == task
        quality[rows] = quality[rows][:, rng.permutation(table.n_models)]
    idx = np.flatnonzero(keep)
    return OutcomeTable.from_rows(
        [table.ids[i] for i in idx], [table.tasks[i] for i in idx],
        [table.splits[i] for i in idx], [table.prompts[i] for i in idx], table.models,
        quality=quality[idx], cost_usd=table.cost_usd[idx],
        output_chars=table.output_chars[idx])


def load_table(name: str) -> OutcomeTable:
    raw = load_outcomes(data_path())
    makers: dict[str, Callable[[], OutcomeTable]] = {
        "untemplated": lambda: untemplated(raw),
        "remix": lambda: remix_table(untemplated(raw)),
        "synthetic": synthetic_table,
        "templated": lambda: raw,
    }
    return makers[name]()


_DATA: dict[str, tuple[OutcomeTable, np.ndarray, tuple[Context, ...]]] = {}


def _init(data: dict[str, tuple[OutcomeTable, np.ndarray]]) -> None:
    for name, (table, e) in data.items():
        _DATA[name] = (table, e, tuple(featurize(parse_request(prompt=p))
                                       for p in table.prompts))


def contexts(name: str, way: str, seed: int, *, split_after: int,
             cap: int) -> tuple[tuple[Context, ...], dict[str, float]]:
    table, e, plain = _DATA[name]
    if way == "none":
        return plain, {}
    if way in ("kmeans3", "task"):
        if way == "task":
            tags = list(table.tasks)
        else:
            centres = kmeans(e[table.indices("train")], 3)
            tags = [f"cluster{int(c)}" for c in
                    ((e[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)]
        return tuple(featurize(parse_request(prompt=p, metadata={"task": t}))
                     for p, t in zip(table.prompts, tags, strict=True)), {}
    # Each prompt's path as the service (and routebandit replay) would assign it.
    paths, tree = grow_clusters(table, e, seed=seed, split_after=split_after, cap=cap)
    test = table.indices("test")
    truth = [table.tasks[i] for i in test]
    info = {"clusters": float(len(tree)), "leaves": float(len({paths[i] for i in test})),
            "purity_top": purity([paths[i][:1] for i in test], truth),
            "purity_depth2": purity([paths[i][:2] for i in test], truth),
            "purity_leaves": purity([paths[i] for i in test], truth)}
    return clustered_contexts(plain, paths), info


def run(job: tuple[str, str, int, int, int]) -> tuple[str, str, int, dict[str, Any]]:
    name, way, seed, split_after, cap = job
    table = _DATA[name][0]
    ctx, info = contexts(name, way, seed, split_after=split_after, cap=cap)
    config = ReplayConfig(seed=seed)
    points = [replay_bandit(table, ctx, cost_weight=w, config=config).point.xy
              for w in DEFAULT_COST_WEIGHTS]
    m = metrics_of(table, points).to_dict()
    return name, way, seed, {**{k: m[k] for k in KEYS}, **info}


def summary(rows: list[dict[str, Any]], key: str) -> tuple[float | None, float, int]:
    got = [r[key] for r in rows if r.get(key) is not None]
    if not got:
        return None, 0.0, 0
    return float(np.mean(got)), float(np.std(got)), len(got)


def report(name: str, results: dict[str, list[dict[str, Any]]], n_seeds: int) -> None:
    base = {k: summary(results["none"], k)[0] for k in KEYS} if "none" in results else {}
    km = {k: summary(results["kmeans3"], k)[0] for k in KEYS} if "kmeans3" in results else {}
    print(f"\n{name}: mean ± sd over seeds (n reached / {n_seeds}); "
          "x: ratio to 'none'; d: difference to 'kmeans3'")
    print(f"  {'kinds':<9}" + "".join(f"{k:>38}" for k in KEYS))
    for way, rows in results.items():
        cells = []
        for k in KEYS:
            mean, sd, n = summary(rows, k)
            cell = f"{fmt(mean, k)} ± {sd:.1f} ({n})"
            if mean is not None and way != "none" and base.get(k):
                cell += f" {mean / base[k]:.2f}x"
            if mean is not None and way not in ("none", "kmeans3") and km.get(k) is not None:
                cell += f" d{mean - km[k]:+.1f}"
            cells.append(cell)
        print(f"  {way:<9}" + "".join(f"{c:>38}" for c in cells))
        if "clusters" in rows[0]:
            print("           " + ", ".join(
                f"{k.replace('_', ' ')} {summary(rows, k)[0]:.2f}"
                for k in ("clusters", "leaves", "purity_top", "purity_depth2",
                          "purity_leaves")) + " (leaves and purity on test)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7",
                        help="replay seeds (default: %(default)s)")
    parser.add_argument("--tables", default=",".join(TABLES),
                        help="outcome tables (default: %(default)s)")
    parser.add_argument("--ways", default=",".join(WAYS),
                        help="ways of telling kinds apart (default: %(default)s)")
    parser.add_argument("--split-after", type=int, default=32,
                        help="embeddings a cluster gathers before it splits (default: 32)")
    parser.add_argument("--cap", type=int, default=64, help="clusters at most (default: 64)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes running seeds side by side (default: %(default)s)")
    args = parser.parse_args(argv)
    if find_subset() is None:
        return 2
    try:
        import wordllama  # noqa: F401
    except ImportError:
        print("the embeddings need the wordllama package: pip install wordllama",
              file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = [t for t in args.tables.split(",") if t.strip()]
    ways = [w for w in args.ways.split(",") if w.strip()]
    data = {}
    for name in tqdm(names, file=sys.stderr, desc="tables and embeddings"):
        table = load_table(name)
        data[name] = (table, embed(table.prompts))
    jobs = [(n, w, s, args.split_after, args.cap) for n in names for w in ways for s in seeds]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        n: {w: [] for w in ways} for n in names}
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(data,)) as pool, \
            tqdm(total=len(jobs), file=sys.stderr, unit="run", desc="replays") as bar:
        for name, way, _, metrics in pool.map(run, jobs):
            results[name][way].append(metrics)
            bar.update(1)
    print(f"bandit half of the replay, {len(DEFAULT_COST_WEIGHTS)} cost weights, seeds "
          f"{args.seeds}; tree: split_after={args.split_after}, cap={args.cap}, test "
          "prompts assigned by the tree train left")
    for name in names:
        report(name, results[name], len(seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
