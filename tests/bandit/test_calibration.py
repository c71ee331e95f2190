"""The judge's weight and calibration: one formula for the service and the replay."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bandit.calibration import (
    DEFAULT_JUDGE_WEIGHT,
    DEFAULT_MIN_PAIRS,
    Calibration,
    calibrated,
    learned_quality,
)
from feedback import grades
from serving.settings import JudgeSettings

unit = st.floats(0.0, 1.0)


@given(score=unit, weight=unit, offset=st.floats(-1.0, 1.0), pairs=st.integers(0, 50))
def test_the_same_as_the_services(score: float, weight: float, offset: float,
                                  pairs: int) -> None:
    assert learned_quality(score, weight) == grades.learned_quality(score, weight)
    table = {"m": (offset, pairs)}
    assert calibrated(score, "m", table, min_pairs=20) == grades.calibrated(
        score, "m", table, min_pairs=20)


def test_the_services_defaults() -> None:
    fields = JudgeSettings.model_fields
    assert fields["weight"].default == DEFAULT_JUDGE_WEIGHT
    assert fields["calibration_min_pairs"].default == DEFAULT_MIN_PAIRS


def test_offsets_are_per_model_means_and_apply_after_enough_pairs() -> None:
    c = Calibration(min_pairs=3)
    for judge, person in ((0.9, 0.6), (0.5, 0.3), (1.0, 0.8)):
        c.learn_one("a", judge=judge, person=person)
        c.learn_one("b", judge=person, person=person)
    c.learn_one("c", judge=1.0, person=0.0)
    offset, pairs = c.offsets()["a"]
    assert offset == pytest.approx(0.7 / 3) and pairs == 3
    assert c.offsets()["b"] == (0.0, 3)
    assert c.applies("a") and not c.applies("c") and not c.applies("unseen")
    assert c.calibrate(0.5, "a") == pytest.approx(0.5 - 0.7 / 3)
    assert c.calibrate(0.5, "c") == 0.5 and c.calibrate(0.5, "unseen") == 0.5
    assert c.calibrate(0.1, "a") == 0.0  # clipped


@given(score=unit, weight=unit)
def test_a_learned_grade_stays_between_the_score_and_one_half(score: float,
                                                               weight: float) -> None:
    q = learned_quality(score, weight)
    assert min(score, 0.5) - 1e-12 <= q <= max(score, 0.5) + 1e-12


def test_min_pairs_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_pairs"):
        Calibration(min_pairs=0)
