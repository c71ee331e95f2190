"""The sampled judge in the real app: a fake judge upstream over real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from feedback.grades import JUDGE, GradeBook
from serving.judge import RESPONSE_FORMAT, JudgeFailure, parse_grade, sampled
from tests.databases import BACKENDS, database_url
from tests.fakes.fake_upstream import FakeUpstream
from tests.fakes.server import ServerThread
from tests.serving.gateway_stack import serve_app, started_fakes, wait_until

GRADE = json.dumps({"score": 0.9, "reason": "correct and complete"})


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    yield from started_fakes()


class App:
    def __init__(self, server: ServerThread, key: str) -> None:
        self.server = server
        self.sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0,
                                 timeout=10)
        self.http = httpx.Client(base_url=server.url, timeout=10,
                                 headers={"authorization": f"Bearer {key}"})
        self.n = 0

    @property
    def service(self) -> Any:
        return self.server.app.state.service

    @property
    def book(self) -> GradeBook:
        return GradeBook(self.service.store)

    def ask(self, content: str | None = None, **extra: Any) -> str:
        """One passthrough answer from ``cheap`` (the judge is ``big``); its decision id."""
        self.n += 1
        messages = [{"role": "user", "content": content or f"question number {self.n}"}]
        raw = self.sdk.chat.completions.with_raw_response.create(
            model="cheap", messages=messages, **extra)  # type: ignore[call-overload]
        raw.parse()
        return str(raw.headers["x-routebandit-decision-id"])

    def call(self, coro: Any) -> Any:
        """Run ``coro`` on the server's event loop; its result."""
        loop = self.service.grading.loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

    def idle(self) -> None:
        """Wait until every grade so far is stored."""
        async def idle() -> None:
            await self.service.grading.idle()
        self.call(idle())

    def promote(self) -> int:
        async def promote() -> int:
            n: int = await self.service.grading.promote()
            return n
        return int(self.call(promote()))

    def view(self, decision_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/decisions/{decision_id}")
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out


def _app(fakes: dict[str, FakeUpstream], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         **overrides: Any) -> Iterator[App]:
    for server, key in serve_app(fakes, tmp_path, monkeypatch, with_key=True, **overrides):
        fakes["big"].behavior.text = GRADE
        a = App(server, key or "")
        yield a
        a.sdk.close()
        a.http.close()


def judged(**judge: Any) -> dict[str, Any]:
    # grace 1 h and a slow loop: the tests promote by hand.
    return {"judge": {"model": "big", "sample_rate": 1.0, **judge},
            "grades": {"grace_s": 0, "interval_s": 3600},
            "signals": {"regenerated": False}}


@pytest.fixture
def app(fakes: dict[str, FakeUpstream], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    yield from _app(fakes, tmp_path, monkeypatch, **judged())


# -- pure parts ------------------------------------------------------------------------
def test_sample_is_seeded_and_honours_the_rate() -> None:
    ids = [f"{i:032x}" for i in range(4000)]
    picked = [sampled(i, rate=0.25, seed=7) for i in ids]
    assert picked == [sampled(i, rate=0.25, seed=7) for i in ids]  # the same every time
    assert 0.22 < sum(picked) / len(ids) < 0.28
    assert picked != [sampled(i, rate=0.25, seed=8) for i in ids]  # the seed matters
    assert not any(sampled(i, rate=0.0, seed=7) for i in ids)
    assert all(sampled(i, rate=1.0, seed=7) for i in ids)


@pytest.mark.parametrize("content", [
    "great answer", '{"reason": "no score"}', '{"score": 1.5, "reason": "x"}',
    '{"score": true, "reason": "x"}', '{"score": "0.5"}', "[0.5]", None, '{"score": NaN}',
], ids=["prose", "no-score", "out-of-range", "bool", "string", "array", "none", "nan"])
def test_an_answer_without_a_valid_score_is_a_failure(content: Any) -> None:
    with pytest.raises(JudgeFailure):
        parse_grade(content)


# -- the judge in the app --------------------------------------------------------------
def test_every_sampled_answer_is_graded_with_a_json_schema_request(
        app: App, fakes: dict[str, FakeUpstream]) -> None:
    ids = [app.ask() for _ in range(3)]
    app.idle()
    judge_calls = fakes["big"].log.requests
    assert len(judge_calls) == 3
    assert judge_calls[0]["response_format"] == RESPONSE_FORMAT
    assert judge_calls[0]["model"] == "big-wire"
    assert "question number" in judge_calls[0]["messages"][1]["content"]
    for decision_id in ids:
        (grade,) = app.book.of(decision_id)
        assert (grade.source, grade.score, grade.status) == (JUDGE, 0.9, "pending")
        assert grade.cost_usd is not None and grade.cost_usd > 0
    # The judge's calls are never decisions: only the three answers were routed.
    assert app.service.store.count("decisions") == 3
    metrics = app.http.get("/metrics").text
    assert 'routebandit_judge_calls_total{model="big",result="graded"} 3.0' in metrics


def test_sample_rate_zero_never_calls_the_judge(
        fakes: dict[str, FakeUpstream], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for app in _app(fakes, tmp_path, monkeypatch, **judged(sample_rate=0.0)):
        decision_id = app.ask()
        app.idle()
        assert fakes["big"].log.requests == []
        assert app.book.of(decision_id) == []


def test_seeded_share_of_answers_is_judged(
        fakes: dict[str, FakeUpstream], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for app in _app(fakes, tmp_path, monkeypatch, **judged(sample_rate=0.5, seed=3)):
        ids = [app.ask() for _ in range(12)]
        app.idle()
        graded = {d for d in ids if app.book.of(d)}
        assert graded == {d for d in ids if sampled(d, rate=0.5, seed=3)}
        assert len(fakes["big"].log.requests) == len(graded)


def test_spend_cap_stops_judging(fakes: dict[str, FakeUpstream], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for app in _app(fakes, tmp_path, monkeypatch, **judged(daily_budget_usd=1e-9)):
        ids = [app.ask() for _ in range(3)]
        app.idle()
        assert len(fakes["big"].log.requests) == 1  # the first call spent the day's cap
        assert [len(app.book.of(d)) for d in ids] == [1, 0, 0]
        assert 'routebandit_judge_skipped_total{reason="budget"} 2.0' in app.http.get(
            "/metrics").text


@pytest.mark.parametrize("fault", ["timeout", "prose", "error"])
def test_judge_failures_are_recorded_and_never_learned(
        fault: str, fakes: dict[str, FakeUpstream], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for app in _app(fakes, tmp_path, monkeypatch,
                    **judged(timeout_s=0.3, retries=1)):
        if fault == "timeout":
            fakes["big"].behavior.hang_s = 1.0
        elif fault == "prose":
            fakes["big"].behavior.text = "A fine answer, I would say 9/10."
        else:
            fakes["big"].behavior.fail_status = 500
        decision_id = app.ask()
        app.idle()
        (grade,) = app.book.of(decision_id)
        assert grade.status == "failed" and grade.score is None
        assert grade.reason
        # A bad answer is not retried; a timeout or a 500 is, once.
        assert len(fakes["big"].log.requests) == (1 if fault == "prose" else 2)
        assert app.promote() == 0
        view = app.view(decision_id)
        assert view["learned_from"] is None and view["feedback"] is None
        assert [(f["source"], f["status"]) for f in view["feedbacks"]] == [(JUDGE, "failed")]
        # ...and the judge goes on: the next answer is graded.
        fakes["big"].behavior.hang_s = 0.0
        fakes["big"].behavior.fail_status = None
        fakes["big"].behavior.text = GRADE
        later = app.ask()
        app.idle()
        assert [g.score for g in app.book.of(later)] == [0.9]


def test_a_posted_score_wins_when_it_comes_first(app: App) -> None:
    decision_id = app.ask()
    r = app.http.post("/v1/feedback", json={"decision_id": decision_id, "score": 0.2})
    assert r.status_code == 200, r.text
    app.idle()
    assert app.promote() == 0
    view = app.view(decision_id)
    assert view["learned_from"]["source"] == "client"
    assert view["learned_from"]["score"] == 0.2
    assert {(f["source"], f["status"], f["learned"]) for f in view["feedbacks"]} == {
        ("client", "learned", True), (JUDGE, "superseded", False)}


def test_a_posted_score_wins_when_it_comes_after_the_grade_was_learned(app: App) -> None:
    decision_id = app.ask()
    app.idle()
    assert app.promote() == 1
    view = app.view(decision_id)
    assert view["learned_from"]["source"] == JUDGE
    assert view["learned_from"]["score"] == pytest.approx(0.5 + 0.8 * (0.9 - 0.5))
    learned = app.service.learner
    wait_until(lambda: learned.n_learned >= 1)
    r = app.http.post("/v1/feedback", json={"decision_id": decision_id, "score": 0.1})
    assert r.status_code == 200, r.text  # not a conflict: it takes the grade's place
    assert r.json()["score"] == 0.1
    wait_until(lambda: learned.n_learned >= 2)  # the correction step
    view = app.view(decision_id)
    assert view["learned_from"]["source"] == "client"
    assert view["learned_from"]["score"] == 0.1
    assert {(f["source"], f["status"]) for f in view["feedbacks"]} == {
        ("client", "learned"), (JUDGE, "replaced")}
    # The same score again is a duplicate; another one a conflict, as for any feedback.
    again = app.http.post("/v1/feedback", json={"decision_id": decision_id, "score": 0.1})
    assert again.json()["duplicate"] is True
    other = app.http.post("/v1/feedback", json={"decision_id": decision_id, "score": 0.7})
    assert other.status_code == 409


def test_rubric_comes_from_the_request_metadata(app: App,
                                                fakes: dict[str, FakeUpstream]) -> None:
    app.ask(extra_body={"routebandit": {"metadata": {"judge_rubric": "Only rhymes count."}}})
    app.idle()
    system = fakes["big"].log.requests[-1]["messages"][0]["content"]
    assert system.startswith("Only rhymes count.")


def test_unknown_judge_model_fails_start_up(tmp_path: Path) -> None:
    from serving.app import create_app
    from serving.settings import SettingsError, load_settings

    settings = load_settings(data_dir=str(tmp_path), judge={"model": "nope"}, embedder="none")
    app = create_app(settings)

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises(SettingsError, match="judge.model"):
        asyncio.run(start())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("order", ["judge-first", "person-first"])
def test_exactly_once_in_both_orders_with_a_restart_in_between(
        order: str, backend: str, fakes: dict[str, FakeUpstream], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for url in database_url(backend, tmp_path):
        settings = {**judged(), "database_url": url}
        for app in _app(fakes, tmp_path, monkeypatch, **settings):
            decision_id = app.ask()
            app.idle()
            if order == "judge-first":
                assert app.promote() == 1
            else:
                r = app.http.post("/v1/feedback", json={"decision_id": decision_id,
                                                        "score": 0.1})
                assert r.status_code == 200
            wait_until(lambda a=app: a.service.learner.n_learned == 1)
        # restarted: the shutdown checkpoint holds that one step
        for app in _app(fakes, tmp_path, monkeypatch, **settings):
            assert app.service.policy.n_learned == 1
            if order == "judge-first":
                r = app.http.post("/v1/feedback", json={"decision_id": decision_id,
                                                        "score": 0.1})
                assert r.status_code == 200
                wait_until(lambda a=app: a.service.learner.n_learned == 1)  # the correction
            else:
                assert app.promote() == 0  # the grade waits, then finds a posted score
            n_after = 2 if order == "judge-first" else 1
            wait_until(lambda a=app, n=n_after: a.service.policy.n_learned == n)
            view = app.view(decision_id)
            assert view["learned_from"]["source"] == "client"
            assert view["learned_from"]["score"] == 0.1
            status = {f["source"]: f["status"] for f in view["feedbacks"]}
            assert status == {"client": "learned",
                              JUDGE: "replaced" if order == "judge-first" else "superseded"}
        for app in _app(fakes, tmp_path, monkeypatch, **settings):
            assert app.service.policy.n_learned == n_after  # nothing learned twice
            assert app.view(decision_id)["learned_from"]["in_checkpoint"] is True


def test_agreement_and_calibration_against_people(
        fakes: dict[str, FakeUpstream], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for app in _app(fakes, tmp_path, monkeypatch, **judged(calibration_min_pairs=2)):
        scored = [app.ask() for _ in range(2)]
        unscored = app.ask()
        app.idle()
        for decision_id, person in zip(scored, (0.4, 0.6), strict=True):
            r = app.http.post("/v1/feedback", json={"decision_id": decision_id,
                                                    "score": person})
            assert r.status_code == 200
        grading = app.service.grading
        app.call(grading.measure_agreement())
        metrics = app.http.get("/metrics").text
        assert 'routebandit_judge_agreement{stat="n"} 2.0' in metrics
        assert grading.agreement.mean_difference == pytest.approx(0.4)  # judged 0.9 each
        assert grading.calibration == {"cheap": (pytest.approx(0.4), 2)}
        assert 'routebandit_judge_calibration_offset{model="cheap"} 0.4' in metrics
        assert app.promote() == 1  # the unscored one; the others have people's scores
        learned = app.view(unscored)["learned_from"]
        # calibrated: 0.9 - 0.4 = 0.5, then weighted: 0.5 + 0.8 * (0.5 - 0.5)
        assert (learned["source"], learned["score"]) == (JUDGE, pytest.approx(0.5))
        params, run_metrics = grading.record()
        assert params["judge.model"] == "big"
        assert params["judge.calibration.cheap"] == "offset +0.4000 from 2 pairs"
        assert run_metrics["judge.agreement.n"] == 2.0


def test_rate_limit_skips_what_it_cannot_take(
        fakes: dict[str, FakeUpstream], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 6 a minute: a burst of one, then one every 10 s.
    for app in _app(fakes, tmp_path, monkeypatch, **judged(rate_per_minute=6)):
        ids = [app.ask() for _ in range(3)]
        app.idle()
        assert len(fakes["big"].log.requests) == 1
        assert [len(app.book.of(d)) for d in ids] == [1, 0, 0]
        assert 'routebandit_judge_skipped_total{reason="rate"} 2.0' in app.http.get(
            "/metrics").text


def test_the_judge_calls_on_its_own_thread_and_loop(
        app: App, fakes: dict[str, FakeUpstream], monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.upstream import Upstream

    calls: list[tuple[str, str, asyncio.AbstractEventLoop, int]] = []
    complete = Upstream.complete

    async def spy(self: Upstream, spec: Any, payload: Any, **kw: Any) -> Any:
        calls.append((spec.name, threading.current_thread().name,
                      asyncio.get_running_loop(), id(self.client)))
        return await complete(self, spec, payload, **kw)

    monkeypatch.setattr(Upstream, "complete", spy)
    app.ask()
    app.idle()
    grading = app.service.grading
    serving = {(name, loop, client) for model, name, loop, client in calls
               if model == "cheap"}
    judging = {(name, loop, client) for model, name, loop, client in calls
               if model == "big"}
    assert len(serving) == 1 and len(judging) == 1
    ((s_thread, s_loop, s_client),) = serving
    ((j_thread, j_loop, j_client),) = judging
    assert s_loop is grading.loop  # the answer: on the serving loop
    assert j_thread == grading.judge.thread.name == "routebandit-judge" != s_thread
    assert j_loop is not grading.loop  # the judge: its own loop, its own httpx client
    assert j_client != s_client


def test_a_full_inbox_drops_and_counts(fakes: dict[str, FakeUpstream], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for app in _app(fakes, tmp_path, monkeypatch, **judged(max_queue=1, timeout_s=5)):
        fakes["big"].behavior.hang_s = 1.0  # the first answer holds the judge
        ids = [app.ask() for _ in range(4)]
        fakes["big"].behavior.hang_s = 0.0
        app.idle()
        graded = [d for d in ids if app.book.of(d)]
        assert graded[:1] == ids[:1] and len(graded) == 2  # one judged, one queued
        assert 'routebandit_judge_skipped_total{reason="queue"} 2.0' in app.http.get(
            "/metrics").text
