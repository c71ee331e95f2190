"""Policy versions through MLflow: round trip, registry aliases, pyfunc, evaluation."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bandit import Policy, PolicyConfig, featurize, parse_request
from feedback import synthetic
from feedback.training import relearn
from feedback.versions import Arms, PolicySource, Split
from tests.mlflow_store import fresh_tracking_uri

PROMPTS = [
    "Write a Python function that sorts a list",
    "Solve the equation 3x + 4 = 17",
    "Tell me a short story about a sleepy cat",
    "Fix this bug: def f(x): return x.reverses()",
    "What is the integral of x^3?",
]


@pytest.fixture(scope="module")
def logs() -> dict[str, list[synthetic.LoggedExample]]:
    return {"train": synthetic.traffic(1500, seed=1), "test": synthetic.traffic(1000, seed=2)}


@pytest.fixture(scope="module")
def trained(logs: dict[str, list[synthetic.LoggedExample]]) -> Policy:
    policy = Policy(synthetic.catalog(), config=PolicyConfig(exploration="epsilon"), seed=3)
    relearn(policy, logs["train"])
    return policy


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory, logs: dict[str, list],
          trained: Policy) -> object:
    """A tracking store with v1 (untrained) and v2 (trained from logs)."""
    from feedback.tracking import Tracker

    tracker = Tracker(fresh_tracking_uri(tmp_path_factory.mktemp("mlflow")))
    naive = Policy(synthetic.catalog(), seed=3)
    v1 = tracker.log_policy_version(naive, examples=logs["test"], kind="snapshot")
    v2 = tracker.log_policy_version(trained.clone(), examples=logs["test"], kind="train",
                                    alias="challenger", frontier=[(0.0001, 0.4), (0.004, 0.8)])
    assert (v1.version, v2.version) == (1, 2)
    return tracker


def test_importing_feedback_does_not_import_mlflow() -> None:
    code = ("import sys, feedback.tracking, feedback.versions, feedback.training; "
            "sys.exit('mlflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_tracking_uri_resolution(tmp_path: Path) -> None:
    from feedback.tracking import resolve_tracking_uri

    env = {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    assert resolve_tracking_uri("sqlite:///x.db", environ=env) == "sqlite:///x.db"
    assert resolve_tracking_uri(None, environ=env) == "http://mlflow:5000"
    assert resolve_tracking_uri(None, data_dir=tmp_path, environ={}) == (
        f"sqlite:///{tmp_path}/mlflow.db"
    )


def test_a_version_round_trips_and_decides_identically(tracker, trained: Policy) -> None:
    loaded = tracker.load_version("v2")
    original = trained.clone()
    assert loaded.version == "v2"
    for prompt in PROMPTS * 4:
        ctx = featurize(parse_request(prompt=prompt))
        a, b = original.decide(ctx), loaded.decide(ctx)
        assert (a.model, a.pmf) == (b.model, b.pmf)
    assert loaded.n_learned == trained.n_learned


def test_the_run_carries_params_metrics_and_artifacts(tracker) -> None:
    v = tracker.show(2)
    assert v.kind == "train" and v.aliases == ("challenger",)
    for key in ("vw_args", "exploration", "weights.cost", "feature_version", "catalog_digest",
                "n_learned", "parent_version"):
        assert key in v.params, key
    assert v.n_learned == 1500
    for key in ("ope.ips", "ope.snips_low", "ope.dr_high", "ope.logged", "ope.quality",
                "ope.cost_usd", "ope.latency_ms", "ope.share.large", "logged.quality"):
        assert key in v.metrics, key
    artifacts = {f.path for f in tracker.client.list_artifacts(v.run_id)}
    assert {"policy.rbp", "catalog.yaml", "features.json", "cost_quality.png", "ope.json",
            "frontier.json"} <= artifacts


def test_pyfunc_predicts_the_policys_greedy_choice(tracker) -> None:
    import pandas as pd

    model = tracker.load_pyfunc("challenger")
    policy = tracker.load_version("challenger")
    frame = pd.DataFrame({"prompt": PROMPTS})
    expected = [policy.decide(featurize(parse_request(prompt=p)), explore=False).model
                for p in PROMPTS]
    assert list(model.predict(frame)) == expected


def test_a_better_candidate_scores_higher_before_promotion(tracker, logs) -> None:
    tracker.promote(1)
    ev = tracker.evaluate("challenger", logs["test"], log=True)
    assert ev.champion is not None and ev.champion.version == 1
    cand, champ = ev.reports["v2"], ev.reports["v1"]
    for est in ("ips", "snips", "dr"):
        assert getattr(cand, est).low > getattr(champ, est).high, est
    uniform = synthetic.traffic(1, seed=0)  # noqa: F841  (the logger is uniform)
    assert cand.logged.covers(champ.logged.value)
    assert ev.run_id is not None
    runs = tracker.runs("evaluation")
    assert "metrics.candidate.dr" in runs.columns and len(runs) >= 1


def test_promote_and_rollback_change_what_the_service_decides(tracker) -> None:
    tracker.promote(1)
    source = PolicySource(tracker)
    arms = Arms(source.load())
    assert source.version == 1 and source.poll() is None

    code = featurize(parse_request(prompt="Write a Python function that sorts a list"))
    before = {arms.route(code).served.policy_version for _ in range(3)}

    v = tracker.promote("challenger")
    assert v.version == 2 and "champion" in v.aliases and "challenger" not in v.aliases
    swapped = source.poll()
    assert swapped is not None
    arms.champion = swapped
    after = arms.route(code).served
    assert before == {"v1"} and after.policy_version == "v2"
    assert arms.champion.decide(code, explore=False).model in ("coder", "large")  # not small

    assert tracker.rollback().version == 1
    arms.champion = source.poll() or arms.champion
    assert arms.route(code).served.policy_version == "v1"
    from feedback.tracking import TrackingError

    with pytest.raises(TrackingError, match="no previous champion"):
        tracker.rollback()


def test_list_show_compare(tracker) -> None:
    versions = tracker.list_versions()
    assert [v.version for v in versions][:2] == [2, 1]
    rows = dict((name, (a, b)) for name, a, b in tracker.compare(1, 2))
    assert rows["version"] == ("v1", "v2")
    assert rows["kind"] == ("snapshot", "train")
    assert float(rows["ope.dr"][1]) > float(rows["ope.dr"][0])
    from feedback.tracking import TrackingError

    with pytest.raises(TrackingError):
        tracker.show("v99")
    with pytest.raises(TrackingError, match="expected a number"):
        tracker.show("latest")


def test_ab_split_is_sticky_and_near_its_percentage() -> None:
    split = Split(mode="ab", percent=30.0)
    arms = [split.arm(f"user-{i}") for i in range(4000)]
    share = arms.count("challenger") / len(arms)
    assert 0.27 < share < 0.33
    assert arms == [split.arm(f"user-{i}") for i in range(4000)]


def test_shadow_mode_serves_the_champion_and_logs_the_challenger(trained: Policy) -> None:
    champion = Policy(synthetic.catalog(), seed=1)
    champion.set_version("v1")
    challenger = trained.clone()
    challenger.set_version("v2")
    arms = Arms(champion, challenger, Split(mode="shadow"))
    routed = arms.route(featurize(parse_request(prompt="hello")), user_key="u")
    assert routed.arm == "champion" and routed.served.policy_version == "v1"
    assert routed.shadow is not None and routed.shadow.policy_version == "v2"
    assert arms.policy_for(routed.shadow) is challenger


def test_module_exports_pyfunc_class_lazily() -> None:
    tracking = importlib.import_module("feedback.tracking")
    assert tracking.PolicyModel.__module__ == "feedback.tracking"


def test_snapshots_follow_the_schedule_and_shutdown(tracker, logs) -> None:
    from feedback.versions import SnapshotSchedule, Snapshotter

    now = [0.0]
    policy = tracker.load_version(2)
    n0 = policy.n_learned
    schedule = SnapshotSchedule(every_n=50, every_s=600.0, clock=lambda: now[0])
    schedule.mark(n0)
    snap = Snapshotter(tracker, schedule=schedule, examples=lambda: logs["test"][:200])
    relearn(policy, logs["train"][:10])
    assert snap.maybe(policy) is None  # 10 < 50 and no time passed
    now[0] = 601.0
    v = snap.maybe(policy)  # time is up
    assert v is not None and v.kind == "snapshot" and v.parent == "v2"
    assert v.n_learned == n0 + 10 and "ope.dr" in v.metrics
    assert snap.snapshot(policy, reason="shutdown") is None  # nothing new since
    relearn(policy, logs["train"][10:12])
    last = snap.snapshot(policy, reason="shutdown")
    assert last is not None and last.params["snapshot.reason"] == "shutdown"


def test_a_replay_result_becomes_a_run(tracker) -> None:
    doc = {"config": {"seed": 0, "policy": {"epsilon": 0.05}},
           "frontier": [{"cost_weight": 0.0, "quality": 0.8, "cost_per_prompt": 0.01}],
           "aiq": 0.7, "cost_pct_for_98": None, "best_single": {"quality": 0.8},
           "baselines": {"random": {"aiq": 0.5}}}
    run = tracker.client.get_run(tracker.log_replay(doc, run_name="replay"))
    assert run.data.params["replay.policy.epsilon"] == "0.05"
    assert run.data.metrics == {"aiq": 0.7, "best_single.quality": 0.8, "random.aiq": 0.5}
    assert run.data.tags["routebandit.kind"] == "replay"


def test_only_feedback_tracking_imports_mlflow() -> None:
    root = Path(__file__).resolve().parents[2]
    offenders = [
        str(path.relative_to(root))
        for package in ("bandit", "feedback", "serving")
        for path in sorted((root / package).rglob("*.py"))
        if path.name != "tracking.py" or path.parent.name != "feedback"
        if any(line.lstrip().startswith(("import mlflow", "from mlflow"))
               for line in path.read_text(encoding="utf-8").splitlines())
    ]
    assert offenders == []


def test_a_versions_record_carries_the_model_changes_it_went_through(tracker,
                                                                     trained: Policy) -> None:
    policy = trained.clone()
    model = policy.catalog.names[0]
    policy.reset_model(model)
    v = tracker.log_policy_version(policy, kind="snapshot")
    shown = tracker.show(v.version)
    assert shown.metrics["changes"] == 1.0
    for key in ("config.kind_memory", "config.estimate_memory", "config.detect_changes",
                "config.change_threshold", "config.change_drift"):
        assert key in shown.params, key
    path = tracker.client.download_artifacts(shown.run_id, "changes.json")
    record = json.loads(Path(path).read_text())
    assert [(e["model"], e["source"]) for e in record["changes"]] == [(model, "operator")]
    assert record["counts"] == {model: 1}
    # the loaded version remembers it too
    assert [e.model for e in tracker.load_version(f"v{v.version}").changes] == [model]
