"""MLflow's own UI reads well: runs are named by what they are and carry their aliases."""

from __future__ import annotations

from pathlib import Path

from bandit import Policy
from feedback import synthetic
from tests.mlflow_store import fresh_tracking_uri


def names(tracker: object) -> dict[str, tuple[str, str]]:
    """Run name and aliases tag of every version's run, by version tag."""
    runs = tracker.client.search_runs([tracker.experiment_id()])  # type: ignore[attr-defined]
    return {r.data.tags["routebandit.version"]: (r.info.run_name,
                                                 r.data.tags["routebandit.aliases"])
            for r in runs if "routebandit.version" in r.data.tags}


def test_runs_are_named_by_version_kind_and_aliases(tmp_path: Path) -> None:
    from feedback.tracking import Tracker

    tracker = Tracker(fresh_tracking_uri(tmp_path))
    tracker.log_policy_version(Policy(synthetic.catalog(), seed=1), kind="snapshot")
    tracker.log_policy_version(Policy(synthetic.catalog(), seed=2), kind="train",
                               alias="challenger")
    assert names(tracker) == {"v1": ("policy v1 (snapshot)", ""),
                              "v2": ("policy v2 (train, challenger)", "challenger")}
    tracker.promote(1)
    tracker.promote(2)  # the challenger becomes the champion; v1 loses the alias
    assert names(tracker) == {"v1": ("policy v1 (snapshot)", ""),
                              "v2": ("policy v2 (train, champion)", "champion")}
    tracker.rollback()
    assert names(tracker)["v1"] == ("policy v1 (snapshot, champion)", "champion")
    tracker.log_policy_version(Policy(synthetic.catalog(), seed=3), kind="train",
                               run_name="my experiment")
    assert names(tracker)["v3"] == ("my experiment", "")
    recent = tracker.recent_versions(limit=3)
    assert [(v.version, v.kind, v.aliases) for v in recent] == [
        (3, "train", ()), (2, "train", ()), (1, "snapshot", ("champion",))]
    assert recent[0].params["kind"] == "train" and "n_learned" in recent[0].metrics


def test_a_replay_run_is_named_after_its_data_and_seed(tmp_path: Path) -> None:
    from feedback.tracking import Tracker

    tracker = Tracker(fresh_tracking_uri(tmp_path))
    run_id = tracker.log_replay({"config": {"seed": 0}, "data": {"source": "x/outcomes.csv"}})
    assert tracker.client.get_run(run_id).info.run_name == "replay outcomes.csv seed 0"
