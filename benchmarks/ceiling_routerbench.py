"""What any router could reach on the RouterBench subset, and from what (PEEKS at test).

Usage (from the repository root, in the project's virtualenv)::

    python benchmarks/ceiling_routerbench.py [--json out/ceiling.json] [--no-embedding]

Nothing here is a router: every figure looks at the test split's grades, to bound what
routers can do there (bandit/ceiling.py). It prints

1. **routing by task**: the best frontier of a router that tells the tasks apart but not
   the prompts within a task (each task's model chosen from its *test* means, at every
   cost weight where a choice changes), its headline numbers against the issue's
   targets, and the vertices of its hull with each task's model;
2. **signal within a task**: for every task and model, the test AUC with which a
   full-information predictor tells the prompts the model answers right from those it
   gets wrong (0.5 = no signal). Predictors: the replay's full-information baseline
   (Vowpal Wabbit on the bandit's own features, every model's grade on every train
   prompt) and, if the ``wordllama`` package is installed (``pip install wordllama``;
   its wheel carries its weights, nothing is downloaded), a logistic regression per task
   and model on a 256-dimension semantic embedding of the prompt's last paragraph, with
   the headline numbers of routing on those predictions;
3. **near-ties**: the ceiling's hull vertex just below 98 % of the best quality is the
   allocation a router must find at one cost weight to reach 98 % cheaply. At each
   weight of the replay's sweep where the per-task table (train means) picks that
   allocation, every task's best and second-best model, their gap in mean reward and
   how many grades of each would tell them apart at two standard errors, against the
   task's train prompts (a bandit sees one grade per prompt).

The data is read from ``$ROUTEBANDIT_SHARED/data/routerbench-subset/outcomes.csv``
(default ``../shared`` next to the repository). It takes seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from routerbench import (
    TARGETS,
    find_subset,
    last_paragraph,
    meets,
    metrics_of,
    wordllama_embed,
)
from tqdm import tqdm

from bandit.ceiling import separation, within_task_auc
from bandit.frontier import FrontierMetrics
from bandit.outcomes import OutcomeTable, load_outcomes
from bandit.replay import (
    DEFAULT_COST_WEIGHTS,
    OperatingPoint,
    ReplayConfig,
    best_single_model,
    featurize_table,
    full_information_points,
    full_information_predictions,
    per_task_points,
    single_model_points,
    task_ceiling_points,
)

#: L2 strengths of the embedding regressions (inverse, as scikit-learn's ``C``); all
#: are reported, so the best of them, chosen on test, flatters the embedding.
EMBEDDING_C = (0.0001, 0.001, 0.01, 0.1)


def _pct(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}%"


def print_metrics(name: str, m: FrontierMetrics) -> None:
    values = m.to_dict()
    cells = [f"{key.replace('_pct', '')} {_pct(values[key])} "
             f"({op}{target:g}: {'ok' if meets(values[key], op, target) else 'MISS'})"
             for key, op, target in TARGETS]
    print(f"  {name:<44} " + ", ".join(cells) +
          f", quality_at_30 {_pct(m.quality_pct_at_30)}, AIQ {m.aiq:.4f}")


def hull_vertices(table: OutcomeTable, points: tuple[OperatingPoint, ...],
                  m: FrontierMetrics) -> list[dict[str, Any]]:
    """The points on the hull, cheapest first, with each task's most used model."""
    best = best_single_model(single_model_points(table))
    on_hull = {(round(c, 12), round(q, 12)) for c, q in m.hull}
    rows = []
    for p in sorted(points, key=lambda p: p.cost_per_prompt):
        if (round(p.cost_per_prompt, 12), round(p.quality, 12)) not in on_hull:
            continue
        rows.append({
            "cost_pct": 100 * p.cost_per_prompt / best.cost_per_prompt,
            "quality_pct": 100 * p.quality / best.quality,
            "cost_weight": p.cost_weight,
            "by_task": {t.task: t.choices[0][0] for t in p.by_task},
        })
        on_hull.discard((round(p.cost_per_prompt, 12), round(p.quality, 12)))
    return rows


def print_auc(name: str, aucs: dict[str, dict[str, float | None]], table: OutcomeTable) -> None:
    print(f"\n  within-task AUC, {name} (test split; 0.5 = no signal)")
    short = [m.split("/")[-1][:14] for m in table.models]
    print(f"    {'task':<16}" + "".join(f"{s:>15}" for s in short) + f"{'median':>9}")
    for task, per_model in aucs.items():
        vals = [v for v in per_model.values() if v is not None]
        print(f"    {task:<16}" + "".join(
            f"{'-' if v is None else f'{v:.3f}':>15}" for v in per_model.values()) +
            f"{np.median(vals) if vals else float('nan'):>9.3f}")


def embed_last_paragraphs(prompts: tuple[str, ...]) -> np.ndarray | str:
    """wordllama's 256-dimension embedding of each prompt's last paragraph (the question
    of a few-shot prompt), or why it is not available."""
    try:
        return wordllama_embed([last_paragraph(text) for text in prompts])
    except ImportError:
        return "the wordllama package is not installed (pip install wordllama)"
    except (FileNotFoundError, ValueError) as exc:
        return f"wordllama could not load its bundled weights: {exc}"


def logistic(x: np.ndarray, y: np.ndarray, c: float, iters: int = 30) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method (``C`` as scikit-learn's):
    returns the weights, the intercept last. ``y`` in [0, 1] is a soft label."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    reg = np.full(xb.shape[1], 1.0 / c)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-xb @ w))
        grad = xb.T @ (p - y) + reg * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def embedding_predictions(table: OutcomeTable, emb: np.ndarray, c: float) -> np.ndarray:
    """FULL INFORMATION plus the task label: per task and model, a logistic regression
    on the standardised embedding, fit on every train grade; test predictions."""
    train, test = table.indices("train"), table.indices("test")
    tasks = np.array(table.tasks)
    mu, sd = emb[train].mean(axis=0), emb[train].std(axis=0) + 1e-9
    z = (emb - mu) / sd
    pred = np.empty((len(test), table.n_models))
    for task in sorted(set(table.tasks)):
        tr = train[tasks[train] == task]
        te_mask = tasks[test] == task
        te = test[te_mask]
        for j in range(table.n_models):
            w = logistic(z[tr], table.quality[tr, j], c)
            pred[te_mask, j] = 1.0 / (1.0 + np.exp(-(z[te] @ w[:-1] + w[-1])))
    return pred


def near_ties(table: OutcomeTable, vertices: list[dict[str, Any]],
              best_quality: float) -> list[dict[str, Any]]:
    below = [v for v in vertices if v["quality_pct"] < 98.0]
    if not below or len(below) == len(vertices):
        print("  the ceiling's hull does not cross 98% between two vertices")
        return []
    target = below[-1]["by_task"]
    print("  the allocation below 98%: " +
          ", ".join(f"{t}: {m.split('/')[-1]}" for t, m in target.items()))
    rows = []
    for p in per_task_points(table, DEFAULT_COST_WEIGHTS):
        if {t.task: t.choices[0][0] for t in p.by_task} != target:
            continue
        assert p.cost_weight is not None
        for sep in separation(table, p.cost_weight):
            print(f"    w={p.cost_weight:<7g} {sep.task:<16} {sep.best.split('/')[-1]:>20} over "
                  f"{sep.runner_up.split('/')[-1]:<20} by {sep.gap:.3f}: "
                  f"{sep.grades_needed:6.0f} grades of each needed, {sep.prompts} prompts")
            rows.append({"cost_weight": p.cost_weight, **dataclasses.asdict(sep)})
    if not rows:
        print("  no weight of the sweep picks it from the train means")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--no-embedding", action="store_true",
                        help="skip the wordllama embedding even if it is installed")
    args = parser.parse_args(argv)
    path = find_subset()
    if path is None:
        return 2
    table = load_outcomes(path)
    best = best_single_model(single_model_points(table))
    out: dict[str, Any] = {"source": str(path),
                           "best_single": {"model": best.model, "quality": best.quality,
                                           "cost_per_prompt": best.cost_per_prompt}}
    print(f"best single model on test: {best.model}, quality {best.quality:.4f} at "
          f"${best.cost_per_prompt:.5f} per prompt; 98% of it is {0.98 * best.quality:.4f}")

    print("\n1. routing by task, each task's model from its TEST means (peeks):")
    points = task_ceiling_points(table)
    m = metrics_of(table, [p.xy for p in points])
    print_metrics(f"task ceiling ({len(points)} cost weights)", m)
    vertices = hull_vertices(table, points, m)
    print("  its hull, cheapest first:")
    for v in vertices:
        tasks = ", ".join(f"{t}: {name.split('/')[-1]}" for t, name in v["by_task"].items())
        print(f"    cost {v['cost_pct']:6.2f}%  quality {v['quality_pct']:7.3f}%  {tasks}")
    out["task_ceiling"] = {**m.to_dict(), "vertices": vertices}

    print("\n2. signal within a task")
    contexts = featurize_table(table)
    config = ReplayConfig(cost_weights=DEFAULT_COST_WEIGHTS)
    with tqdm(total=len(table.indices("train")) + len(table.indices("test")),
              file=sys.stderr, unit="prompt", desc="full-information baseline") as bar:
        pred, cost = full_information_predictions(table, contexts, config=config,
                                                  progress=bar.update)
    aucs = within_task_auc(table, pred)
    print_auc("full-information baseline on the bandit's features", aucs, table)
    full = metrics_of(table, [p.xy for p in full_information_points(
        table, pred, cost, DEFAULT_COST_WEIGHTS)])
    print_metrics("full-information baseline, routed", full)
    out["full_information"] = {**full.to_dict(), "within_task_auc": aucs}

    emb = "skipped (--no-embedding)" if args.no_embedding else embed_last_paragraphs(
        table.prompts)
    if isinstance(emb, str):
        print(f"\n  semantic embedding: {emb}")
        out["embedding"] = {"skipped": emb}
    else:
        out["embedding"] = {}
        for c in tqdm(EMBEDDING_C, file=sys.stderr, desc="embedding regressions"):
            epred = embedding_predictions(table, emb, c)
            eaucs = within_task_auc(table, epred)
            print_auc(f"wordllama embedding + logistic regression per task, C={c:g}",
                      eaucs, table)
            em = metrics_of(table, [p.xy for p in full_information_points(
                table, epred, cost, DEFAULT_COST_WEIGHTS)])
            print_metrics(f"embedding C={c:g}, routed (full info + task)", em)
            out["embedding"][f"C={c:g}"] = {**em.to_dict(), "within_task_auc": eaucs}
    print("\n3. near-ties a router must settle for 98% (train means)")
    out["near_ties"] = near_ties(table, vertices, best.quality)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
