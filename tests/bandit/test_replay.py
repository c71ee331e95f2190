from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import serving.cli as cli
from bandit.ceiling import within_task_auc
from bandit.frontier import frontier_metrics, quality_at
from bandit.outcomes import OutcomeTable, load_outcomes
from bandit.replay import (
    ReplayConfig,
    best_single_model,
    featurize_table,
    full_information_predictions,
    oracle_points,
    replay,
    replay_bandit,
    work_units,
)

MODELS = ("mathy", "coder", "tiny")
COST = {"mathy": 0.002, "coder": 0.002, "tiny": 0.0001}
SUBJECTS = {
    "math": ["sum", "product", "integral", "fraction", "equation", "prime", "angle", "root"],
    "code": ["python", "function", "loop", "list", "string", "class", "regex", "sort"],
}


def synthetic_rows(n: int = 240, seed: int = 0) -> list[dict[str, str]]:
    """Two tasks whose best model differs: mathy aces math, coder aces code, tiny is
    cheap and right 30% of the time. The best single model gets about half right."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        task = "math" if i % 2 == 0 else "code"
        words = rng.choice(SUBJECTS[task], size=4)
        if task == "math":
            prompt = f"Compute the {words[0]} and the {words[1]} of {rng.integers(100)}."
        else:
            prompt = f"Write a python {words[0]} that handles a {words[1]} and {words[2]}."
        quality = {
            "mathy": 1.0 if task == "math" else 0.0,
            "coder": 1.0 if task == "code" else 0.0,
            "tiny": float(rng.random() < 0.3),
        }
        row = {"id": f"s{i}", "task": task, "split": "test" if (i // 2) % 10 < 3 else "train",
               "prompt": prompt}
        for m in MODELS:
            row[f"{m}|quality"] = f"{quality[m]:g}"
            row[f"{m}|cost_usd"] = f"{COST[m] * (0.9 + 0.2 * rng.random()):.6g}"
            row[f"{m}|output_chars"] = str(int(rng.integers(20, 400)))
        rows.append(row)
    return rows


def write_table(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_table(tmp_path_factory.mktemp("replay") / "outcomes.csv", synthetic_rows())


@pytest.fixture(scope="module")
def table(table_path: Path) -> OutcomeTable:
    return load_outcomes(table_path)


@pytest.fixture(scope="module")
def result(table: OutcomeTable) -> Any:
    return replay(table, ReplayConfig(cost_weights=(0.0, 0.05, 1.0), curve_every=50))


@pytest.fixture
def only_replay_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI imports every command module; keep this test independent of the others.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("serving.commands.replay",))


def shared_outcomes() -> Path:
    root = Path(__file__).resolve().parents[2]
    shared = Path(os.environ.get("ROUTEBANDIT_SHARED", root.parent / "shared"))
    return shared / "data" / "routerbench-subset" / "outcomes.csv"


HEADLINE = ("cost_pct_for_95", "cost_pct_for_98", "quality_pct_at_10", "quality_pct_at_30",
            "aiq")


def assert_schema(out: dict[str, Any], n_weights: int) -> None:
    assert out["schema"] == "routebandit.replay/1"
    assert set(out["best_single"]) == {"model", "quality", "cost_per_prompt"}
    assert len(out["frontier"]) == n_weights
    for point in out["frontier"]:
        assert {"cost_weight", "quality", "cost_per_prompt"} <= set(point)
        if len(out["data"]["tasks"]) > 1:
            assert set(point["by_task"]) == set(out["data"]["tasks"])
            for task in point["by_task"].values():
                assert {"quality", "cost_per_prompt", "choices"} == set(task)
    for key in HEADLINE:
        assert key in out
        assert out[key] is None or isinstance(out[key], float)
    assert out["aiq_cost_range"][0] == 0.0
    assert set(out["baselines"]) == {"full_information", "per_task", "task_ceiling", "oracle",
                                     "random", "single_models"}
    for b in out["baselines"].values():
        assert {"label", "peeks", "frontier", "hull", *HEADLINE} <= set(b)
    assert out["baselines"]["oracle"]["peeks"] is True
    assert out["baselines"]["task_ceiling"]["peeks"] is True
    aucs = out["baselines"]["full_information"]["within_task_auc"]
    assert set(aucs) == set(out["data"]["tasks"])
    for per_model in aucs.values():
        assert set(per_model) == set(out["data"]["models"])
        assert all(v is None or 0.0 <= v <= 1.0 for v in per_model.values())
    assert all("within_task_auc" not in b for name, b in out["baselines"].items()
               if name != "full_information")
    assert "full-information" in out["baselines"]["full_information"]["label"]
    assert len(out["learning_curve"]) == n_weights
    assert {"step", "mean_reward", "mean_quality", "mean_cost_per_prompt"} == set(
        out["learning_curve"][0]["points"][0])
    reference = out["learning_curve_reference"]
    assert reference["model"] == out["best_single"]["model"]
    assert [p["step"] for p in reference["points"]] == [
        p["step"] for p in out["learning_curve"][0]["points"]]
    assert {"seed", "passes", "cost_weights", "exploration", "limit"} <= set(out["config"])
    assert out["data"]["models"] and out["data"]["n_test"] > 0
    assert out["elapsed_seconds"] > 0


def test_cli_end_to_end_writes_json_plot_and_table(
    table_path: Path, tmp_path: Path, only_replay_command: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    json_path, png_path = tmp_path / "out" / "replay.json", tmp_path / "out" / "replay.png"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = cli.main(["replay", str(table_path), "--cost-weights", "0,0.05,1",
                     "--json", str(json_path), "--plot", str(png_path), "--seed", "1",
                     "--tracking-uri", uri])
    assert code == 0
    out = json.loads(json_path.read_text())
    assert_schema(out, n_weights=3)
    assert out["config"]["cost_weights"] == [0.0, 0.05, 1.0]
    assert out["data"]["source"] == str(table_path)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    captured = capsys.readouterr()
    assert "best single model on test" in captured.out
    assert "full-information baseline" in captured.out
    assert "most used model per task" in captured.out
    assert "task ceiling (test means per task; peeks)" in captured.out
    auc_text = captured.out.split("Within-task AUC", 1)[1].split("\n\n", 1)[0]
    for task, per_model in out["baselines"]["full_information"]["within_task_auc"].items():
        median = float(np.median([v for v in per_model.values() if v is not None]))
        assert f"{task} {median:.2f}" in auc_text
    assert "replay" in captured.err  # the progress bar
    # The bandit routes math to mathy and code to coder: far better than random.
    best_bandit = max(p["quality"] for p in out["frontier"])
    assert best_bandit > out["baselines"]["random"]["frontier"][0]["quality"] + 0.3
    assert out["aiq"] > out["baselines"]["random"]["aiq"]
    # ... and the run is in MLflow with its headline numbers.
    assert "logged to MLflow as run" in captured.out
    import mlflow  # noqa: PLC0415

    runs = mlflow.MlflowClient(tracking_uri=uri).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(tracking_uri=uri).search_experiments()])
    assert len(runs) == 1
    assert runs[0].data.metrics["aiq"] == pytest.approx(out["aiq"])
    assert runs[0].data.tags["routebandit.kind"] == "replay"
    assert runs[0].data.metrics["task_ceiling.aiq"] == pytest.approx(
        out["baselines"]["task_ceiling"]["aiq"])


def test_replay_command_is_registered() -> None:
    assert "serving.commands.replay" in cli.COMMAND_MODULES


def test_cli_reports_a_bad_table(tmp_path: Path, only_replay_command: None,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,task,prompt\np1,t,hi\n")
    assert cli.main(["replay", str(bad), "--quiet", "--no-mlflow"]) == 2
    assert "no model columns" in capsys.readouterr().err


def test_bandit_beats_random_and_single_models(result: Any) -> None:
    rnd = result.baseline("random")
    assert result.bandit.metrics.aiq > rnd.metrics.aiq
    assert max(p.quality for p in result.bandit.points) > 0.9
    assert result.best_single.quality < 0.6
    assert result.bandit.metrics.cost_pct_for_95 is not None


def test_every_router_uses_the_same_metric_code(result: Any) -> None:
    best = result.best_single
    for r in (result.bandit, *result.baselines):
        expected = frontier_metrics([p.xy for p in r.points], reference_cost=best.cost_per_prompt,
                                    reference_quality=best.quality, c_max=result.aiq_cost_max)
        assert r.metrics == expected


def test_baselines(result: Any, table: OutcomeTable) -> None:
    singles = result.baseline("single_models").points
    assert [p.model for p in singles] == list(MODELS)
    assert result.best_single == best_single_model(singles)
    test = table.indices("test")
    oracle = result.baseline("oracle")
    assert oracle.peeks and not result.bandit.peeks
    assert oracle.points[0].cost_weight == 0.0
    assert oracle.points[0].quality == pytest.approx(table.quality[test].max(axis=1).mean())
    assert result.baseline("random").points[0].quality == pytest.approx(
        table.quality[test].mean())
    full = result.baseline("full_information")
    assert [p.cost_weight for p in full.points] == [0.0, 0.05, 1.0]
    assert full.points[0].quality > 0.9
    per_task = result.baseline("per_task")
    assert per_task.points[0].quality == 1.0  # math -> mathy, code -> coder
    assert per_task.points[0].choices == (("coder", 0.5), ("mathy", 0.5))
    assert per_task.points[-1].choices == (("tiny", 1.0),)  # w = 1: a grade < $0.001
    # The task ceiling peeks at test means: on test, no per-task table gets above it.
    ceiling = result.baseline("task_ceiling")
    assert ceiling.peeks
    for p in per_task.points:
        reachable = quality_at(ceiling.metrics.hull, p.cost_per_prompt)
        assert reachable is not None and p.quality <= reachable + 1e-12
    assert ceiling.metrics.aiq >= per_task.metrics.aiq
    # The full-information baseline's AUCs are those of its own predictions.
    pred, _ = full_information_predictions(table, featurize_table(table),
                                           config=result.config)
    assert full.within_task_auc == within_task_auc(table, pred)


def test_every_point_breaks_down_by_task(result: Any, table: OutcomeTable) -> None:
    test = table.indices("test")
    share = {t: sum(table.tasks[i] == t for i in test) / len(test) for t in ("code", "math")}
    for r in (result.bandit, *result.baselines):
        for p in r.points:
            if r.name in ("single_models", "random"):  # no routing to break down
                continue
            assert [t.task for t in p.by_task] == ["code", "math"]
            for t in p.by_task:
                assert sum(s for _, s in t.choices) == pytest.approx(1.0)
            # The tasks' means, weighted by their test prompts, are the point's.
            assert sum(share[t.task] * t.quality for t in p.by_task) == pytest.approx(p.quality)
            assert sum(share[t.task] * t.cost_per_prompt for t in p.by_task) == pytest.approx(
                p.cost_per_prompt)
    # With full information and the task, math goes to mathy and code to coder.
    first = result.baseline("per_task").points[0]
    assert [(t.task, t.choices) for t in first.by_task] == [
        ("code", (("coder", 1.0),)), ("math", (("mathy", 1.0),))]


def test_oracle_picks_cheapest_best_model() -> None:
    t = OutcomeTable.from_rows(
        ["a", "b"], ["x", "x"], ["train", "test"], ["p", "q"], ["big", "small"],
        quality=[[1, 1], [1, 1]], cost_usd=[[0.01, 0.001], [0.01, 0.001]],
        output_chars=[[1, 1], [1, 1]])
    (point,) = oracle_points(t, [0.0])
    assert point.cost_per_prompt == 0.001 and point.choices == (("small", 1.0),)


class Spy(np.ndarray):
    """An array that records the (row, column) cells read with scalar indices."""

    reads: list[tuple[int, int]]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple) and all(np.ndim(k) == 0 for k in key):
            self.reads.append((int(key[0]), int(key[1])))
        elif isinstance(key, tuple):
            rows, cols = np.broadcast_arrays(*key)
            self.reads.extend(zip(rows.ravel().tolist(), cols.ravel().tolist(), strict=True))
        return super().__getitem__(key)


def test_bandit_never_peeks_at_unchosen_models(table: OutcomeTable) -> None:
    reads: list[tuple[int, int]] = []

    def spy(a: np.ndarray) -> Spy:
        s: Spy = a.copy().view(Spy)
        s.reads = reads
        return s

    spied = OutcomeTable(
        ids=table.ids, tasks=table.tasks, splits=table.splits, prompts=table.prompts,
        models=table.models, quality=spy(table.quality), cost_usd=spy(table.cost_usd),
        output_chars=spy(table.output_chars))
    config = ReplayConfig(passes=2)
    replay_bandit(spied, featurize_table(spied), cost_weight=0.05, config=config)
    train = set(table.indices("train").tolist())
    per_row: dict[int, set[int]] = {}
    for i, j in reads:
        if i in train:
            per_row.setdefault(i, set()).add(j)
    assert set(per_row) == train
    assert all(len(cols) == 1 for cols in per_row.values())


def test_replay_is_reproducible(table: OutcomeTable) -> None:
    config = ReplayConfig(cost_weights=(0.05,), passes=2)
    a = replay(table, config).to_dict()
    b = replay(table, config).to_dict()
    a.pop("elapsed_seconds"), b.pop("elapsed_seconds")
    assert a == b


def test_progress_adds_up_to_work_units(table: OutcomeTable) -> None:
    done: list[int] = []
    config = ReplayConfig(cost_weights=(0.0, 1.0), passes=2)
    replay(table, config, progress=done.append)
    assert sum(done) == work_units(table, config)


def test_full_information_predicts_each_models_grade(table: OutcomeTable) -> None:
    pred, cost = full_information_predictions(table, featurize_table(table),
                                              config=ReplayConfig())
    test = table.indices("test")
    assert pred.shape == cost.shape == (len(test), 3)
    right = (pred > 0.5) == (table.quality[test] > 0.5)
    assert right[:, :2].mean() > 0.9  # mathy and coder are predictable from the prompt
    assert cost[:, 2].mean() < cost[:, 0].mean()


def test_config_validation() -> None:
    from bandit.errors import RequestError

    with pytest.raises(RequestError, match="passes"):
        ReplayConfig(passes=0)
    with pytest.raises(RequestError, match="weights.cost"):
        ReplayConfig(cost_weights=(-1.0,))
    with pytest.raises(RequestError, match="cost_weights"):
        ReplayConfig(cost_weights=())


@pytest.mark.shared_data
def test_routerbench_subset_limited_replay(
    tmp_path: Path, only_replay_command: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = shared_outcomes()
    if not path.exists():
        pytest.skip(f"routerbench subset not found at {path} (set ROUTEBANDIT_SHARED)")
    json_path = tmp_path / "rb.json"
    start = time.perf_counter()
    code = cli.main(["replay", str(path), "--limit", "600", "--cost-weights",
                     "0,0.002,0.02,0.2,1", "--json", str(json_path), "--quiet",
                     "--no-mlflow"])
    assert code == 0
    assert time.perf_counter() - start < 60
    out = json.loads(json_path.read_text())
    assert_schema(out, n_weights=5)
    assert out["data"]["n_train"] + out["data"]["n_test"] == 600
    assert len(out["data"]["models"]) == 11
    assert out["best_single"]["model"] == "gpt-4-1106-preview"
    assert out["baselines"]["oracle"]["aiq"] > out["aiq"] > out["baselines"]["random"]["aiq"]
    assert "gpt-4-1106-preview" in capsys.readouterr().out
