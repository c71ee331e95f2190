"""A running RouterService follows the champion alias: promote and rollback change what
it decides, requests keep flowing through the swap, and snapshots are logged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bandit import Policy, PolicyConfig, RewardWeights
from feedback import synthetic
from feedback.store import Store
from feedback.training import relearn
from feedback.versions import Split
from serving.calls import RouteRequest
from serving.service import RouterService
from serving.versioning import VersionManager
from tests.mlflow_store import fresh_tracking_uri

CODE = RouteRequest(prompt="Write a Python function that sorts a list", user_key="u1")


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> object:
    from feedback.tracking import Tracker

    tracker = Tracker(fresh_tracking_uri(tmp_path_factory.mktemp("mlflow")))
    naive = Policy(synthetic.catalog(), seed=3)
    trained = Policy(synthetic.catalog(), config=PolicyConfig(exploration="epsilon"), seed=3)
    relearn(trained, synthetic.traffic(1500, seed=1))
    tracker.log_policy_version(naive, kind="snapshot", alias="champion")  # v1
    tracker.log_policy_version(trained, kind="train", alias="challenger")  # v2
    return tracker


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[RouterService]:
    store = Store(f"sqlite:///{tmp_path / 'routebandit.db'}")
    svc = RouterService(store=store, catalog=synthetic.catalog(),
                        profiles={"balanced": RewardWeights()}, default_profile="balanced")
    await svc.start(lambda: Policy(synthetic.catalog(), seed=0))
    yield svc
    await svc.stop()
    store.close()


async def test_the_service_adopts_the_champion_and_follows_promote_and_rollback(
    service: RouterService, tracker
) -> None:
    tracker.promote(1)
    manager = VersionManager(service, tracker, store=service.store, poll_interval_s=3600)
    await manager.start()
    try:
        assert service.policy.version == "v1"
        assert {(await service.route(CODE))[1].policy_version for _ in range(3)} == {"v1"}

        async def traffic() -> list[str]:
            seen = []
            for _ in range(40):
                seen.append((await service.route(CODE))[1].policy_version)
                await asyncio.sleep(0)
            return seen

        tracker.promote(2)
        seen, _ = await asyncio.gather(traffic(), manager.poll_once())
        assert set(seen) <= {"v1", "v2"} and len(seen) == 40  # no request dropped
        assert service.policy.version == "v2"
        assert (await service.route(CODE))[1].policy_version == "v2"
        assert [v.version for v in tracker.list_versions()][0] == 2  # no snapshot yet

        tracker.rollback()
        await manager.poll_once()
        assert (await service.route(CODE))[1].policy_version == "v1"
    finally:
        await manager.stop()


async def test_shadow_mode_loads_the_challenger(service: RouterService, tracker) -> None:
    tracker.promote(1)
    tracker.set_challenger(2)
    manager = VersionManager(service, tracker, poll_interval_s=3600, split=Split("shadow"))
    await manager.start()
    try:
        routed = manager.arms.route((await service.route(CODE))[1].context)
        assert routed.served.policy_version == "v1"
        assert routed.shadow is not None and routed.shadow.policy_version == "v2"
    finally:
        await manager.stop()


async def test_snapshots_on_schedule_and_shutdown(service: RouterService, tracker) -> None:
    before = {v.version for v in tracker.list_versions()}
    manager = VersionManager(service, tracker, store=service.store, poll_interval_s=3600,
                             snapshot_every=5, snapshot_min_interval_s=0)
    await manager.start()
    policy = service.policy
    relearn(policy, synthetic.traffic(5, seed=9))
    await manager.poll_once()
    relearn(policy, synthetic.traffic(2, seed=10))
    await manager.stop()
    new = [v for v in tracker.list_versions() if v.version not in before]
    assert [v.params.get("snapshot.reason") for v in new] == ["shutdown", "schedule"]
    assert all(v.kind == "snapshot" and v.parent == policy.version for v in new)


async def test_fast_feedback_snapshots_at_most_once_a_minute(service: RouterService,
                                                             tracker) -> None:
    before = {v.version for v in tracker.list_versions()}
    manager = VersionManager(service, tracker, store=service.store, poll_interval_s=3600,
                             snapshot_every=5)  # the default floor: 60 s
    await manager.start()
    relearn(service.policy, synthetic.traffic(20, seed=13))  # 4x snapshot_every at once
    await manager.poll_once()
    assert {v.version for v in tracker.list_versions()} == before
    manager.snapshots.schedule.min_s = 0.0  # as if the minute had passed
    await manager.poll_once()
    manager.snapshots.schedule.min_s = 3600.0
    await manager.stop()  # the shutdown snapshot ignores the floor
    new = [v for v in tracker.list_versions() if v.version not in before]
    assert [v.params.get("snapshot.reason") for v in new] == ["schedule"]


async def test_a_snapshot_scores_the_newest_window_of_decisions(service: RouterService,
                                                                tracker) -> None:
    for i in range(6):
        decision_id, _ = await service.route(RouteRequest(prompt=f"question {i}"))
        await service.feedback(decision_id=decision_id, tenant=None, score=i / 5)
    await service.writer.flush()
    manager = VersionManager(service, tracker, store=service.store, snapshot_window=4)
    window = manager._recent_examples()
    assert [e.quality for e in window] == [0.4, 0.6, 0.8, 1.0]


async def test_a_cluster_follower_never_snapshots(service: RouterService, tracker) -> None:
    before = {v.version for v in tracker.list_versions()}
    leader = False
    manager = VersionManager(service, tracker, store=service.store, poll_interval_s=3600,
                             snapshot_every=5, snapshot_min_interval_s=0,
                             may_snapshot=lambda: leader)
    await manager.start()
    relearn(service.policy, synthetic.traffic(6, seed=11))
    await manager.poll_once()
    await manager.stop()
    assert {v.version for v in tracker.list_versions()} == before
    leader = True  # the same manager, once elected, snapshots as scheduled
    await manager.start()
    relearn(service.policy, synthetic.traffic(6, seed=12))
    await manager.poll_once()
    await manager.stop()
    assert len({v.version for v in tracker.list_versions()} - before) >= 1


async def test_without_a_store_the_service_keeps_serving_and_creates_none(
    service: RouterService, tmp_path: Path
) -> None:
    from feedback.tracking import Tracker

    db = tmp_path / "nowhere" / "mlflow.db"
    manager = VersionManager(service, Tracker(f"sqlite:///{db}"), poll_interval_s=3600)
    await manager.start()
    version = service.policy.version
    relearn(service.policy, synthetic.traffic(3, seed=4))
    await manager.poll_once()
    await manager.stop()
    assert service.policy.version == version and not db.exists()


async def test_the_app_serves_the_champion_and_follows_promotions(
    tracker, tmp_path: Path
) -> None:
    from serving.app import create_app
    from serving.settings import load_settings

    tracker.promote(2)
    (tmp_path / "catalog.yaml").write_text(synthetic.catalog().to_yaml())
    settings = load_settings(data_dir=str(tmp_path), catalog=str(tmp_path / "catalog.yaml"),
                             tracking_uri=tracker.tracking_uri, versions_poll_s=3600,
                             flush_interval_ms=20)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        service = app.state.service
        assert service.policy.version == "v2"
        tracker.promote(1)
        await app.state.versions.poll_once()
        assert (await service.route(CODE))[1].policy_version == "v1"


@pytest.mark.parametrize(
    ("mode", "percent", "served", "arm", "decisions"),
    [("shadow", 0.0, "v1", "champion", 2), ("ab", 100.0, "v2", "challenger", 1),
     ("ab", 0.0, "v1", "champion", 1)],
    ids=["shadow", "ab-all-challenger", "ab-all-champion"],
)
async def test_shadow_and_ab_modes_log_both_arms(
    tracker, tmp_path: Path, mode: str, percent: float, served: str, arm: str, decisions: int
) -> None:
    from serving.app import create_app
    from serving.settings import load_settings

    tracker.promote(1)
    tracker.set_challenger(2)
    (tmp_path / "catalog.yaml").write_text(synthetic.catalog().to_yaml())
    settings = load_settings(data_dir=str(tmp_path), catalog=str(tmp_path / "catalog.yaml"),
                             tracking_uri=tracker.tracking_uri, versions_poll_s=3600,
                             flush_interval_ms=20, split_mode=mode, split_percent=percent)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        decision_id, decision = await app.state.service.route(CODE)
        assert decision.policy_version == served
    store = Store(settings.resolved_database_url)
    try:
        record = store.get_decision(decision_id)
        assert record is not None and record.arm == arm and record.kind == "policy"
        assert store.count("decisions") == decisions
    finally:
        store.close()


async def test_the_app_can_run_without_policy_versions(tmp_path: Path) -> None:
    from serving.app import create_app
    from serving.settings import load_settings

    app = create_app(load_settings(data_dir=str(tmp_path), policy_versions=False))
    async with app.router.lifespan_context(app):
        assert not hasattr(app.state, "versions")
    assert not (tmp_path / "mlflow.db").exists()


def test_serve_prepares_the_tracking_store_before_serving(tmp_path: Path) -> None:
    from serving.app import prepare_tracking
    from serving.settings import load_settings

    prepare_tracking(load_settings(data_dir=str(tmp_path / "off"), policy_versions=False))
    assert not (tmp_path / "off" / "mlflow.db").exists()
    prepare_tracking(load_settings(data_dir=str(tmp_path / "on")))
    assert (tmp_path / "on" / "mlflow.db").is_file()  # not left to the first snapshot


async def test_the_snapshot_floor_is_a_minute_unless_the_interval_is_shorter(
    tracker, tmp_path: Path
) -> None:
    from serving.app import create_app
    from serving.settings import load_settings

    for interval, floor in ((900.0, 60.0), (5.0, 5.0)):
        settings = load_settings(data_dir=str(tmp_path), tracking_uri=tracker.tracking_uri,
                                 versions_poll_s=3600, snapshot_interval_s=interval)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            schedule = app.state.versions.snapshots.schedule
            assert (schedule.min_s, schedule.every_s) == (floor, interval)
