"""``routebandit train``, ``evaluate`` and ``policy`` against a temporary MLflow store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from feedback import synthetic
from serving.cli import main
from serving.commands import tracking_args
from tests.mlflow_store import fresh_tracking_uri

REAL_LOGGED_EXAMPLES = tracking_args.logged_examples


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fresh_tracking_uri(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def catalog_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("catalog") / "catalog.yaml"
    path.write_text(synthetic.catalog().to_yaml())
    return str(path)


@pytest.fixture(autouse=True)
def logs(monkeypatch: pytest.MonkeyPatch) -> None:
    traffic = synthetic.traffic(1500, seed=11)

    def fake(args: argparse.Namespace) -> list[synthetic.LoggedExample]:
        return [x for x in traffic
                if (args.since is None or x.created_at >= args.since)
                and (args.until is None or x.created_at < args.until)]

    monkeypatch.setattr(tracking_args, "logged_examples", fake)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_policy_lifecycle_through_the_cli(
    uri: str, catalog_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # v1: a deliberately poor candidate (it learns to minimise quality)
    code, out, _ = run(capsys, "train", "--tracking-uri", uri, "--base", "none",
                       "--catalog", catalog_file, "--weights", "quality=0,cost=1",
                       "--until", "2026-01-01T12:00Z")
    assert code == 0 and "logged v1" in out and "held-out DR reward" in out
    assert run(capsys, "policy", "promote", "1", "--tracking-uri", uri)[1].strip() == (
        "champion: - -> v1"
    )
    # v2: the default trade-off, learned from the champion's configuration and catalog
    code, out, _ = run(capsys, "train", "--tracking-uri", uri, "--challenger",
                       "--weights", "quality=1,cost=0.02", "--exploration", "epsilon")
    assert code == 0 and "logged v2 (challenger)" in out

    code, out, _ = run(capsys, "evaluate", "challenger", "--tracking-uri", uri,
                       "--weights", "quality=1,cost=0.02")
    assert code == 0
    assert "v2 (candidate)" in out and "v1 (champion)" in out and "logging policy" in out
    # which one wins is tests/feedback/test_tracking.py's business; here, that it is said
    assert "DR verdict: v2 " in out

    code, out, _ = run(capsys, "evaluate", "challenger", "--tracking-uri", uri, "--arms")
    assert "served in the window" in out and "uniform" in out

    code, out, _ = run(capsys, "evaluate", "2", "--tracking-uri", uri, "--json", "--no-log",
                       "--since", "2026-01-01T06:00:00+00:00", "--arms")
    doc = json.loads(out)
    assert doc["candidate"] == "v2" and doc["run_id"] is None
    assert list(doc["arms"]) == ["uniform"] and doc["arms"]["uniform"]["n"] == 1500 - 360
    assert set(doc["reports"]["v2"]) >= {"ips", "snips", "dr", "logged", "share", "n"}

    code, out, _ = run(capsys, "policy", "list", "--tracking-uri", uri)
    lines = out.splitlines()
    assert lines[1].startswith("v2") and "challenger" in lines[1]
    assert lines[2].startswith("v1") and "champion" in lines[2]

    code, out, _ = run(capsys, "policy", "show", "champion", "--tracking-uri", uri)
    assert out.startswith("v1") and "weights.quality = 0.0" in out

    code, out, _ = run(capsys, "policy", "list", "--tracking-uri", uri, "--json")
    assert [v["version"] for v in json.loads(out)] == [2, 1]
    code, out, _ = run(capsys, "policy", "show", "2", "--tracking-uri", uri, "--json")
    assert json.loads(out)["params"]["kind"] == "train"
    assert run(capsys, "policy", "challenger", "v1", "--tracking-uri", uri)[1] == (
        "challenger: v1\n"
    )
    assert run(capsys, "policy", "challenger", "v2", "--tracking-uri", uri)[0] == 0

    code, out, _ = run(capsys, "policy", "compare", "v1", "v2", "--tracking-uri", uri)
    assert "weights.quality" in out and "exploration" in out

    assert "v1 -> v2" in run(capsys, "policy", "promote", "challenger", "--tracking-uri", uri)[1]
    assert "v2 -> v1 (rolled back)" in run(capsys, "policy", "rollback", "--tracking-uri", uri)[1]
    code, _, err = run(capsys, "policy", "rollback", "--tracking-uri", uri)
    assert code == 2 and "no previous champion" in err

    code, _, err = run(capsys, "policy", "show", "v42", "--tracking-uri", uri)
    assert code == 2 and "policy: error" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "1", "--since", "yesterday"], "ISO 8601"),
        (["train", "--weights", "quality"], "name=number"),
        (["train", "--weights", "cost=-1"], "weights.cost"),
    ],
    ids=["bad-time", "bad-weights", "negative-weight"],
)
def test_bad_flags_name_the_problem(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_durations_and_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert tracking_args.when("2026-01-31T12:00Z").isoformat() == "2026-01-31T12:00:00+00:00"
    assert tracking_args.when("7d") < tracking_args.when("1h")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("ROUTEBANDIT_DATA_DIR", str(tmp_path))
    args = argparse.Namespace(tracking_uri=None, data_dir=None, model_name=None,
                              experiment=None, database_url=None)
    assert tracking_args.tracker(args).tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking_args.database_url(args) == f"sqlite:///{tmp_path}/routebandit.db"


def test_evaluate_reads_policy_decisions_in_the_window_from_the_log(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bandit import Policy
    from feedback.store import Store
    from feedback.tracking import Tracker

    monkeypatch.setattr(tracking_args, "logged_examples", REAL_LOGGED_EXAMPLES)
    version = Tracker(uri).log_policy_version(Policy(synthetic.catalog(), seed=5)).version
    db = f"sqlite:///{tmp_path / 'routebandit.db'}"
    store = Store(db)
    traffic = synthetic.traffic(120, seed=12)
    for i, x in enumerate(traffic):
        store.record_decision(decision_id=x.decision_id, decision=x.decision, tenant="t1",
                              kind="forced" if i % 10 == 0 else "policy",
                              created_at=x.created_at)
        store.record_feedback(decision_id=x.decision_id, tenant="t1", score=x.quality or 0.0,
                              reward=x.reward, reward_cost_usd=x.cost_usd or 0.0,
                              reward_latency_ms=x.latency_ms or 0.0)
    store.close()
    code, out, _ = run(capsys, "evaluate", str(version), "--tracking-uri", uri,
                       "--database-url", db, "--since", "2026-01-01T00:30Z",
                       "--until", "2026-01-01T01:30Z", "--json", "--no-log")
    assert code == 0
    report = json.loads(out)["reports"][f"v{version}"]
    in_window = [i for i, x in enumerate(traffic) if 30 <= i < 90 and i % 10 != 0]
    assert report["n"] == len(in_window)
    expected = sum(traffic[i].reward for i in in_window) / len(in_window)
    assert report["logged"]["value"] == pytest.approx(expected)
