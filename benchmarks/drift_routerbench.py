"""How fast the policy follows a change of the world, however long its history.

Usage (from the repository root, in the project's virtualenv)::

    python benchmarks/drift_routerbench.py [--seeds 0,1,2,3] [--histories 3150,12600,50000]
        [--after 1500] [--workers 2] [--modes aging,off]

``bandit.Policy`` is driven directly over the RouterBench subset (every prompt, train and
test, in a seeded order, a new order each pass; exploration on; cost weight 0.05 per
$0.001; learning online throughout). After a history of ``H`` decisions the world changes
in one of these ways, and the next ``--after`` decisions are watched:

* ``degrade``: the model most chosen in the last 1,000 decisions starts answering
  everything wrong (quality 0 from the change on);
* ``newcomer``: a new model joins the catalog with the best model's grades at the
  cheapest model's price;
* ``price``: the most chosen model's calls start costing 20 times as much (the router
  learns it from the measured cost: its catalog entry has no list price; a catalog price
  change acts on the very next decision and needs no benchmark);
* ``none``: nothing changes (what the other scenarios pay is read against it).

Printed per history and scenario, as the mean over seeds with the spread (min-max):
decisions until the affected model crosses its line (under 10 % of decisions for
degrade, under half its share before the change for price, over 50 % for newcomer,
measured over a sliding window of 100 decisions), and the regret paid over the
``--after`` decisions after the change: the sum of (best reward on the prompt among the
available models - reward of the chosen one), the per-prompt oracle of the changed
world. Each mode of the policy is one column: ``aging`` is the default
:class:`bandit.policy.PolicyConfig` (evidence that ages and change detection), ``off``
the same with both turned off (``kind_memory=0, estimate_memory=0,
detect_changes=False``), as
it was before. The history is run once per seed and mode; every history length and
scenario starts from a copy of the policy at that point. A seed and mode take about 60 s
of one core for 50,000 decisions.

``--stationary`` measures instead what the ageing costs where nothing changes: the plain
templated replay's bandit half (train once in the replay's order, 22 cost weights,
evaluated on test) in each mode, its three headline numbers per seed and their mean.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from routerbench import find_subset, metrics_of
from tqdm import tqdm

from bandit.catalog import Catalog, ModelSpec
from bandit.features import Context, featurize, parse_request
from bandit.outcomes import OutcomeTable, load_outcomes
from bandit.policy import Policy, PolicyConfig
from bandit.replay import (
    DEFAULT_COST_WEIGHTS,
    ReplayConfig,
    featurize_table,
    replay_bandit,
    replay_catalog,
)
from bandit.reward import RewardWeights, reward

SCENARIOS = ("degrade", "newcomer", "price", "none")
MODES: dict[str, dict[str, Any]] = {
    "aging": {}, "off": {"kind_memory": 0, "estimate_memory": 0, "detect_changes": False}}
COST_WEIGHT = 0.05
WINDOW = 100
PRICE_FACTOR = 20.0
NEWCOMER = "newcomer"

_TABLE: OutcomeTable | None = None
_CONTEXTS: tuple[Context, ...] = ()


def _load(path: str) -> None:
    global _TABLE, _CONTEXTS
    if _TABLE is None:
        _TABLE = load_outcomes(path)
        _CONTEXTS = tuple(featurize(parse_request(prompt=p)) for p in _TABLE.prompts)


@dataclasses.dataclass
class World:
    """The outcomes the policy sees: the table's, changed from some step on."""

    table: OutcomeTable
    quality: np.ndarray
    cost: np.ndarray
    chars: np.ndarray
    models: list[str]

    @classmethod
    def of(cls, table: OutcomeTable) -> World:
        return cls(table, table.quality, table.cost_usd, table.output_chars,
                   list(table.models))

    def changed(self, scenario: str, target: str) -> World:
        q, c, o, models = self.quality.copy(), self.cost.copy(), self.chars.copy(), list(
            self.models)
        j = models.index(target) if target in models else -1
        if scenario == "degrade":
            q[:, j] = 0.0
        elif scenario == "price":
            c[:, j] *= PRICE_FACTOR
        elif scenario == "newcomer":
            best = int(np.argmax(self.quality.mean(axis=0)))
            cheap = int(np.argmin(self.cost.mean(axis=0)))
            q = np.column_stack([q, q[:, best]])
            c = np.column_stack([c, c[:, cheap]])
            o = np.column_stack([o, o[:, best]])
            models.append(NEWCOMER)
        return World(self.table, q, c, o, models)


def _stream(n_prompts: int, seed: int, start: int, count: int) -> np.ndarray:
    """Prompt indices ``start .. start + count`` of the endless seeded stream (a new
    permutation of every prompt each pass)."""
    out = []
    pos = start
    while len(out) < count:
        pass_no, offset = divmod(pos, n_prompts)
        perm = np.random.default_rng([seed, pass_no]).permutation(n_prompts)
        take = min(count - len(out), n_prompts - offset)
        out.extend(perm[offset : offset + take].tolist())
        pos += take
    return np.array(out, dtype=np.int64)


def _step(policy: Policy, world: World, i: int, weights: RewardWeights) -> tuple[str, float,
                                                                                  float]:
    decision = policy.decide(_CONTEXTS[i], explore=True)
    j = world.models.index(decision.model)
    q, c = float(world.quality[i, j]), float(world.cost[i, j])
    r = reward(weights, quality=q, cost_usd=c)
    policy.learn(decision, r, outcome={"quality": q, "cost_usd": c,
                                       "output_tokens": float(world.chars[i, j]) / 4.0})
    best = float(np.max(world.quality[i] - weights.cost * world.cost[i] / 0.001))
    return decision.model, r, best - r


def _crossing(shares: Sequence[bool], *, below: float | None = None,
              above: float | None = None) -> int | None:
    """The first decision (from the WINDOW-th on) after which the share over the last
    WINDOW decisions is under ``below`` (or over ``above``)."""
    run = 0
    for t, hit in enumerate(shares):
        run += hit
        if t >= WINDOW:
            run -= shares[t - WINDOW]
        if t + 1 < WINDOW:
            continue  # a share is read over a full window
        share = run / WINDOW
        if (below is not None and share < below) or (above is not None and share > above):
            return t + 1
    return None


def run_one(path: str, seed: int, mode: str, histories: Sequence[int],
            after: int, config_of: dict[str, Any]) -> list[dict[str, Any]]:
    _load(path)
    assert _TABLE is not None
    table = _TABLE
    weights = RewardWeights(quality=1.0, cost=COST_WEIGHT, latency=0.0)
    config = dataclasses.replace(PolicyConfig(), **config_of)
    policy = Policy(replay_catalog(table), config=config, weights=weights, seed=seed)
    world = World.of(table)
    done, recent = 0, []
    results = []
    for history in sorted(histories):
        for i in _stream(table.n_prompts, seed, done, history - done):
            model, _, _ = _step(policy, world, int(i), weights)
            recent.append(model)
        recent = recent[-1000:]
        done = history
        counts: dict[str, int] = {}
        for m in recent:
            counts[m] = counts.get(m, 0) + 1
        target = max(counts, key=lambda m: counts[m])
        snapshot = policy.to_bytes()
        for scenario in SCENARIOS:
            branch = Policy.from_bytes(snapshot)
            changed = world.changed(scenario, target)
            watched = target
            if scenario == "newcomer":
                specs = [*replay_catalog(table), ModelSpec(name=NEWCOMER,
                                                           context_window=1_000_000)]
                branch.set_catalog(Catalog.of(specs))
                watched = NEWCOMER
            hits, regret = [], 0.0
            for i in _stream(table.n_prompts, seed, done, after):
                model, _, lost = _step(branch, changed, int(i), weights)
                hits.append(model == watched)
                regret += lost
            share_before = counts[target] / len(recent)
            if scenario == "newcomer":
                cross = _crossing(hits, above=0.5)
            elif scenario == "price":
                # Dearer, a model may still be the best buy on some prompts: the line is
                # half the share it had.
                cross = _crossing(hits, below=share_before / 2)
            else:
                cross = _crossing(hits, below=0.10)
            changes = branch.changes_detected() if hasattr(branch, "changes_detected") else {}
            results.append({"seed": seed, "mode": mode, "history": history,
                            "scenario": scenario, "target": watched,
                            "share_before": share_before,
                            "decisions": cross, "regret": regret,
                            "share_after": float(np.mean(hits[-500:])),
                            "detections": sum(changes.values())})
    return results


KEYS = ("cost_pct_for_95", "cost_pct_for_98", "quality_pct_at_10")


def stationary_one(path: str, seed: int, mode: str,
                   config_of: dict[str, Any]) -> dict[str, Any]:
    table = load_outcomes(path)
    contexts = featurize_table(table)
    config = ReplayConfig(seed=seed,
                          policy=dataclasses.replace(PolicyConfig(), **config_of))
    points = [replay_bandit(table, contexts, cost_weight=w, config=config).point.xy
              for w in DEFAULT_COST_WEIGHTS]
    m = metrics_of(table, points).to_dict()
    return {"seed": seed, "mode": mode, **{k: m[k] for k in KEYS}}


def stationary(path: str, seeds: Sequence[int], modes: Sequence[str], workers: int) -> int:
    jobs = [(path, s, m, MODES[m]) for s in seeds for m in modes]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(stationary_one, *job) for job in jobs]
        rows = [f.result() for f in tqdm(futures, desc="replays", file=sys.stderr)]
    print("templated replay, bandit half, 22 cost weights: cost@95%q / cost@98%q / q@10%cost")
    print("| seed | " + " | ".join(modes) + " |")
    print("|---|" + "---|" * len(modes))

    def cell(r: dict[str, Any]) -> str:
        return " / ".join("-" if r[k] is None else f"{r[k]:.1f}%" for k in KEYS)

    for seed in seeds:
        print(f"| {seed} | " + " | ".join(
            cell(next(r for r in rows if r["seed"] == seed and r["mode"] == m))
            for m in modes) + " |")
    means = []
    for m in modes:
        sel = [r for r in rows if r["mode"] == m]
        parts = []
        for k in KEYS:
            got = [r[k] for r in sel if r[k] is not None]
            parts.append(f"{np.mean(got):.1f}% ± {np.std(got):.1f}" if got else "-")
        means.append(" / ".join(parts))
    print("| mean ± sd | " + " | ".join(means) + " |")
    return 0


def _summary(values: Sequence[float | None], after: int) -> str:
    known = [after + 1 if v is None else v for v in values]
    mean = float(np.mean(known))
    text = f"{mean:.0f} ({min(known):.0f}-{max(known):.0f})"
    return text.replace(str(after + 1), f">{after}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3", help="replay seeds (comma-separated)")
    parser.add_argument("--histories", default="3150,12600,50000",
                        help="decisions before the change (comma-separated)")
    parser.add_argument("--after", type=int, default=1500,
                        help="decisions watched after the change")
    parser.add_argument("--modes", default="aging,off", help=f"of {', '.join(MODES)}")
    parser.add_argument("--workers", type=int, default=2, help="processes")
    parser.add_argument("--kind-memory", type=int, default=None,
                        help="kind_memory of the 'aging' mode (default: PolicyConfig's)")
    parser.add_argument("--estimate-memory", type=int, default=None,
                        help="estimate_memory of the 'aging' mode (default: PolicyConfig's)")
    parser.add_argument("--stationary", action="store_true",
                        help="measure the plain templated replay in each mode instead")
    args = parser.parse_args(argv)
    path = find_subset()
    if path is None:
        return 1
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in ("kind_memory", "estimate_memory"):
        if getattr(args, name) is not None:
            MODES["aging"][name] = getattr(args, name)
    if args.stationary:
        return stationary(str(path), seeds, args.modes.split(","), args.workers)
    histories = sorted(int(h) for h in args.histories.split(","))
    modes = args.modes.split(",")
    jobs = [(str(path), s, m, histories, args.after, MODES[m]) for s in seeds for m in modes]
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_one, *job) for job in jobs]
        for fut in tqdm(futures, desc="seeds x modes", file=sys.stderr):
            rows.extend(fut.result())
    print(f"cost weight {COST_WEIGHT} per $0.001; {len(seeds)} seeds; window {WINDOW}; "
          f"mean (min-max) over seeds")
    head = "| history | scenario | " + " | ".join(
        f"{m}: decisions | {m}: regret" for m in modes) + " | share before |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for history in histories:
        for scenario in SCENARIOS:
            cells = []
            share = ""
            for mode in modes:
                sel = [r for r in rows if r["history"] == history
                       and r["scenario"] == scenario and r["mode"] == mode]
                line = "-" if scenario == "none" else _summary([r["decisions"] for r in sel],
                                                               args.after)
                reg = [r["regret"] for r in sel]
                cells.append(f"{line} | {np.mean(reg):.0f} ({min(reg):.0f}-{max(reg):.0f})")
                share = f"{np.mean([r['share_before'] for r in sel]):.0%}"
                if scenario == "none":
                    det = sum(r["detections"] for r in sel)
                    cells[-1] += f" [{det} detections]"
            print(f"| {history} | {scenario} | " + " | ".join(cells) + f" | {share} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
