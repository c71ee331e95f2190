"""Replay under a simulated judge: seeded, biased where told, calibrated, never peeking."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import serving.cli as cli
from bandit.errors import RequestError
from bandit.outcomes import OutcomeTable
from bandit.replay import (
    JudgedGrades,
    ReplayConfig,
    SimulatedJudge,
    featurize_table,
    replay,
    replay_bandit,
    work_units,
)

MODELS = ("good", "cheap", "flat")


def table(n: int = 400, seed: int = 0, graded: bool = False) -> OutcomeTable:
    """Two kinds of prompt; ``good`` right on both, ``cheap`` on one, ``flat`` half the
    time. ``graded``: grades in [0.3, 0.7] (no clipping at +-0.2) instead of 0/1."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(2, size=n)
    prompts = [("Compute the sum of " if k else "Write a python function for ")
               + " ".join(f"w{x}" for x in rng.integers(50, size=3)) for k in kinds]
    if graded:
        quality = rng.uniform(0.3, 0.7, size=(n, len(MODELS)))
    else:
        quality = np.stack([np.ones(n), kinds.astype(float),
                            (rng.random(n) < 0.5).astype(float)], axis=1)
    cost = np.tile([0.002, 0.0001, 0.0005], (n, 1))
    return OutcomeTable.from_rows(
        [f"p{i}" for i in range(n)], ["math" if k else "code" for k in kinds],
        ["test" if i % 5 == 0 else "train" for i in range(n)], prompts, MODELS,
        quality=quality, cost_usd=cost, output_chars=np.full((n, len(MODELS)), 200.0))


def grades(judged: JudgedGrades, t: OutcomeTable) -> np.ndarray:
    return np.array([[judged.grade(i, j, float(t.quality[i, j]))
                      for j in range(t.n_models)] for i in range(t.n_prompts)])


def test_the_judge_is_seeded() -> None:
    t = table()
    judge = SimulatedJudge(noise=0.2, bias=(("cheap", 0.1),), human_share=0.1)
    a, b = (grades(JudgedGrades(judge, t, seed=3), t) for _ in range(2))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, grades(JudgedGrades(judge, t, seed=4), t))
    assert ((a >= 0) & (a <= 1)).all()
    g = table(graded=True)  # grades in [0.3, 0.7]: the noise is rarely clipped
    spread = grades(JudgedGrades(SimulatedJudge(noise=0.2), g, seed=3), g) - g.quality
    assert abs(spread.mean()) < 0.02 and 0.17 < spread.std() < 0.2

    config = ReplayConfig(seed=3, cost_weights=(0.05,), judge=judge)
    runs = [replay_bandit(t, featurize_table(t), cost_weight=0.05, config=config)
            for _ in range(2)]
    assert runs[0].train_choices == runs[1].train_choices
    assert runs[0].point == runs[1].point and runs[0].judge == runs[1].judge


def test_a_bias_moves_only_the_named_model() -> None:
    t = table()
    judged = JudgedGrades(SimulatedJudge(bias=(("flat", 0.2),)), t, seed=0)
    got = grades(judged, t)
    flat = MODELS.index("flat")
    others = [j for j in range(t.n_models) if j != flat]
    assert np.array_equal(got[:, others], t.quality[:, others])
    assert np.allclose(got[:, flat], np.clip(t.quality[:, flat] + 0.2, 0, 1))


def test_the_human_share_is_honoured() -> None:
    t = table()
    judge = SimulatedJudge(noise=0.3, human_share=0.25, weight=0.5)
    judged = JudgedGrades(judge, t, seed=1)
    train, test = t.indices("train"), t.indices("test")
    humans = [i for i in train if judged.is_human(int(i))]
    assert len(humans) == round(0.25 * len(train))
    assert not any(judged.is_human(int(i)) for i in test)
    # a person's score is learned whole; the judge's at its weight
    h, other = humans[0], next(i for i in train if not judged.is_human(int(i)))
    assert judged.learn(int(h), 0, 1.0) == 1.0
    raw = judged.grade(int(other), 0, 1.0)
    assert judged.learn(int(other), 0, 1.0) == pytest.approx(0.5 + 0.5 * (raw - 0.5))

    run = replay_bandit(t, featurize_table(t), cost_weight=0.05,
                        config=ReplayConfig(seed=1, judge=judge))
    assert run.judge is not None
    assert run.judge.humans == len(humans) and run.judge.decisions == len(train)


def test_calibration_removes_a_planted_bias() -> None:
    t = table(graded=True)
    judge = SimulatedJudge(bias=(("cheap", 0.2),), human_share=0.5, weight=1.0, min_pairs=20)
    judged = JudgedGrades(judge, t, seed=0)
    cheap = MODELS.index("cheap")
    train = [int(i) for i in t.indices("train")]
    learned = [(i, judged.learn(i, cheap, float(t.quality[i, cheap]))) for i in train]
    judged_only = [(i, q) for i, q in learned if not judged.is_human(i)]
    pairs = 0
    for i, q in learned:
        truth = float(t.quality[i, cheap])
        if judged.is_human(i):
            pairs += 1
            assert q == truth
        elif pairs < 20:
            assert q == pytest.approx(truth + 0.2)  # not enough people yet
        else:
            assert q == pytest.approx(truth, abs=1e-9)  # the offset is exactly the bias
    assert pairs >= 20 and len(judged_only) > 20
    offsets = judged.calibration.offsets()
    assert offsets["cheap"][0] == pytest.approx(0.2) and offsets["cheap"][1] == pairs
    assert judged.applied_from["cheap"] > 0

    raw = JudgedGrades(SimulatedJudge(bias=(("cheap", 0.2),), human_share=0.5, weight=1.0,
                                      calibrate=False), t, seed=0)
    late = [raw.learn(i, cheap, float(t.quality[i, cheap])) for i in train][-1]
    if not raw.is_human(train[-1]):
        assert late == pytest.approx(float(t.quality[train[-1], cheap]) + 0.2)


def test_a_replay_measures_the_bias_of_the_judged_model_only() -> None:
    t = table(graded=True)
    judge = SimulatedJudge(bias=(("good", 0.2),), human_share=0.4, min_pairs=5)
    run = replay_bandit(t, featurize_table(t), cost_weight=0.0,
                        config=ReplayConfig(judge=judge))
    assert run.judge is not None
    cal = {m: (off, n, at) for m, off, n, at in run.judge.calibration}
    assert cal["good"][0] == pytest.approx(0.2) and cal["good"][2] is not None
    for m in ("cheap", "flat"):
        if m in cal:
            assert cal[m][0] == pytest.approx(0.0)


class Spy(np.ndarray):
    """An array that records the (row, column) cells read."""

    reads: list[tuple[int, int]]

    def __getitem__(self, key: Any) -> Any:
        reads = getattr(self, "reads", None)  # None: a view taken from a spy
        if reads is None:
            return super().__getitem__(key)
        if isinstance(key, tuple) and all(np.ndim(k) == 0 for k in key):
            reads.append((int(key[0]), int(key[1])))
        elif isinstance(key, tuple):
            rows, cols = np.broadcast_arrays(*key)
            reads.extend(zip(rows.ravel().tolist(), cols.ravel().tolist(), strict=True))
        else:
            reads.append((-1, -1))  # a whole row or the whole array
        return super().__getitem__(key)


def test_nothing_of_a_model_not_chosen_is_read() -> None:
    t = table()
    reads: list[tuple[int, int]] = []

    def spy(a: np.ndarray) -> Spy:
        s: Spy = a.copy().view(Spy)
        s.reads = reads
        return s

    spied = OutcomeTable(ids=t.ids, tasks=t.tasks, splits=t.splits, prompts=t.prompts,
                         models=t.models, quality=spy(t.quality), cost_usd=spy(t.cost_usd),
                         output_chars=spy(t.output_chars))
    judge = SimulatedJudge(noise=0.2, bias=(("flat", 0.2),), human_share=0.2, min_pairs=3)
    run = replay_bandit(spied, featurize_table(spied), cost_weight=0.05,
                        config=ReplayConfig(passes=2, judge=judge))
    train = [int(i) for i in t.indices("train")]
    order = dict(zip(np.random.default_rng(0).permutation(t.indices("train")).tolist(),
                     run.train_choices, strict=True))
    assert (-1, -1) not in reads
    per_row: dict[int, set[int]] = {}
    for i, j in reads:
        if i in order:
            per_row.setdefault(i, set()).add(j)
    assert set(per_row) == set(train)
    assert all(cols == {order[i]} for i, cols in per_row.items())


def test_replay_runs_clean_and_judged_on_the_same_contexts() -> None:
    t = table()
    judge = SimulatedJudge(noise=0.2, human_share=0.1)
    cost_weights = (0.0, 0.05, 1.0)
    plain = replay(t, ReplayConfig(cost_weights=cost_weights))
    done: list[int] = []
    config = ReplayConfig(cost_weights=cost_weights, judge=judge)
    result = replay(t, config, progress=done.append)
    assert sum(done) == work_units(t, config)
    assert result.bandit.points == plain.bandit.points  # the clean half is the plain replay
    assert result.judge is not None and len(result.judge.runs) == 3
    assert result.judge.clean == result.bandit
    out = json.loads(json.dumps(result.to_dict()))
    assert out["config"]["judge"] == judge.to_dict()
    assert set(out["judge"]["difference"]) == {"cost_pct_for_95", "cost_pct_for_98",
                                               "quality_pct_at_10"}
    assert len(out["judge"]["frontier"]) == 3
    assert out["judge"]["by_cost_weight"][0]["human_decisions"] == round(
        0.1 * len(t.indices("train")))
    assert plain.to_dict()["judge"] is None


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"noise": -0.1}, "noise"),
    ({"noise": float("inf")}, "noise"),
    ({"human_share": 1.5}, "human share"),
    ({"weight": 2.0}, "weight"),
    ({"min_pairs": 0}, "min_pairs"),
    ({"bias": (("a", 0.1), ("a", 0.2))}, "2 biases"),
    ({"bias": (("a", 1.5),)}, "bias of 'a'"),
], ids=["negative-noise", "infinite-noise", "share", "weight", "pairs", "twice", "big-bias"])
def test_judge_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(RequestError, match=match):
        SimulatedJudge(**kwargs)


def test_a_bias_of_an_unknown_model_is_refused() -> None:
    with pytest.raises(RequestError, match="no model 'gpt-9'"):
        replay(table(), ReplayConfig(cost_weights=(0.0,),
                                     judge=SimulatedJudge(bias=(("gpt-9", 0.2),))))


@pytest.fixture
def only_replay_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("serving.commands.replay",))


def write(t: OutcomeTable, path: Path) -> Path:
    header = ["id", "task", "split", "prompt"] + [
        f"{m}|{c}" for m in t.models for c in ("quality", "cost_usd", "output_chars")]
    lines = [",".join(header)]
    for i in range(t.n_prompts):
        cells = [t.ids[i], t.tasks[i], t.splits[i], t.prompts[i]]
        for j in range(t.n_models):
            cells += [f"{t.quality[i, j]:g}", f"{t.cost_usd[i, j]:g}",
                      f"{t.output_chars[i, j]:g}"]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_cli_prints_the_judge_against_the_clean_replay(
    tmp_path: Path, only_replay_command: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(table(200), tmp_path / "t.csv")
    json_path = tmp_path / "out.json"
    code = cli.main(["replay", str(path), "--cost-weights", "0,0.05,1", "--embedder", "none",
                     "--judge-bias", "flat=+0.2", "--judge-noise", "0.1", "--human-share",
                     "0.1", "--no-calibration", "--json", str(json_path), "--quiet",
                     "--no-mlflow"])
    assert code == 0
    text = capsys.readouterr().out
    assert "simulated judge on train: noise 0.1, bias flat=+0.2, human 10%" in text
    assert "not calibrated" in text
    for row in ("clean (the table's grades)", "under the judge", "difference (points)"):
        assert row in text
    out = json.loads(json_path.read_text())
    assert out["judge"]["judge"]["calibrate"] is False
    assert out["config"]["judge"]["bias"] == {"flat": 0.2}


def test_cli_refuses_a_bias_of_an_unknown_model(
    tmp_path: Path, only_replay_command: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(table(50), tmp_path / "t.csv")
    code = cli.main(["replay", str(path), "--embedder", "none", "--quiet", "--no-mlflow",
                     "--judge-bias", "nobody=+0.2"])
    assert code == 2
    assert "no model 'nobody'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--judge-bias", "flat"], ["--judge-bias", "flat=2"],
                                  ["--human-share", "2"], ["--human-share", "x"]],
                         ids=["no-value", "big-bias", "share", "not-a-number"])
def test_cli_refuses_a_bad_judge_option(tmp_path: Path, only_replay_command: None,
                                        argv: list[str]) -> None:
    path = write(table(50), tmp_path / "t.csv")
    with pytest.raises(SystemExit) as exc:
        cli.main(["replay", str(path), "--embedder", "none", "--quiet", "--no-mlflow", *argv])
    assert exc.value.code == 2
