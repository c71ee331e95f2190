"""Cooldown breakers: open after consecutive failures, one probe, doubling backoff."""

from __future__ import annotations

import pytest

from serving.cooldown import Cooldown


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    cd = Cooldown(failures=2, seconds=10, clock=Clock())
    cd.failure("m")
    cd.success("m")  # a success in between resets the count
    cd.failure("m")
    assert cd.state("m") == "closed" and cd.available("m")
    cd.failure("m")
    assert cd.state("m") == "open" and not cd.available("m")
    assert cd.allowed(["m", "n"]) == ["n"]


def test_one_probe_at_a_time_and_backoff_doubles() -> None:
    clock = Clock()
    cd = Cooldown(failures=1, seconds=10, max_seconds=25, clock=clock)
    cd.failure("m")
    clock.now = 10
    assert cd.state("m") == "probe"
    assert cd.begin("m") is True
    assert cd.begin("m") is False  # the probe is in flight
    cd.failure("m")  # failed probe: 20 s now
    clock.now = 29
    assert cd.state("m") == "open"
    clock.now = 30
    assert cd.begin("m")
    cd.failure("m")  # would be 40 s, capped at 25
    clock.now = 54
    assert cd.state("m") == "open"
    clock.now = 55
    assert cd.begin("m")
    cd.success("m")
    assert cd.state("m") == "closed"


def test_released_probe_can_be_retried() -> None:
    clock = Clock()
    cd = Cooldown(failures=1, seconds=1, clock=clock)
    cd.failure("m")
    clock.now = 1
    assert cd.begin("m")
    cd.release("m")
    assert cd.begin("m")


@pytest.mark.parametrize(("failures", "seconds"), [(0, 1.0), (1, -1.0)], ids=["no-failures",
                                                                           "negative"])
def test_rejects_bad_settings(failures: int, seconds: float) -> None:
    with pytest.raises(ValueError):
        Cooldown(failures=failures, seconds=seconds)


def test_retry_after_holds_the_model_back_at_once() -> None:
    clock = Clock()
    cd = Cooldown(failures=3, seconds=30, max_seconds=600, clock=clock)
    cd.failure("m", retry_after=7)  # one failure of three, but the upstream said when
    assert cd.state("m") == "open" and cd.open_for("m") == 7
    clock.now = 7
    assert cd.state("m") == "closed" and cd.open_for("m") == 0
    cd.failure("m", retry_after=10_000)  # never believed beyond max_seconds
    assert cd.open_for("m") == 600
    cd.success("m")
    assert cd.state("m") == "closed"
