"""A judge's grades as the router learns them: weighted, and calibrated against people.

The service's rule (``docs/judge.md``), as pure functions so that the service and the
replay share one formula:

* a grade of weight ``w`` is learned as ``0.5 + w * (score - 0.5)``
  (:func:`learned_quality`); a person's score counts whole;
* per answering model, the judge's mean offset from people's scores on the same
  decisions (judge minus person) is subtracted from the judge's grade of that model's
  answers, clipped to [0, 1], once ``min_pairs`` pairs back it (:func:`calibrated`,
  :class:`Calibration`).
"""

from __future__ import annotations

from collections.abc import Mapping

#: The service's defaults (``judge.weight``, ``judge.calibration_min_pairs``).
DEFAULT_JUDGE_WEIGHT = 0.8
DEFAULT_MIN_PAIRS = 20


def learned_quality(score: float, weight: float) -> float:
    """The quality a grade is learned as: ``weight`` of the way from 0.5 to ``score``.

    >>> learned_quality(1.0, 0.8), learned_quality(0.0, 0.5), learned_quality(0.3, 1.0)
    (0.9, 0.25, 0.3)
    """
    return 0.5 + weight * (score - 0.5)


def calibrated(score: float, model: str, calibration: Mapping[str, tuple[float, int]], *,
               min_pairs: int) -> float:
    """The judge's ``score`` of ``model``'s answer less the judge's mean offset for that
    model (``calibration[model] = (offset, pairs)``), once ``min_pairs`` people's scores
    back it; clipped to [0, 1].

    >>> calibrated(0.9, "m", {"m": (0.2, 30)}, min_pairs=20)
    0.7
    >>> calibrated(0.9, "m", {"m": (0.2, 5)}, min_pairs=20)
    0.9
    """
    offset, n = calibration.get(model, (0.0, 0))
    if n < min_pairs:
        return score
    return round(min(1.0, max(0.0, score - offset)), 12)


class Calibration:
    """The judge's running mean offset from people, per answering model.

    >>> c = Calibration(min_pairs=2)
    >>> c.learn_one("m", judge=0.9, person=0.6)
    >>> c.calibrate(0.9, "m")  # one pair: not enough yet
    0.9
    >>> c.learn_one("m", judge=1.0, person=0.9)
    >>> c.offsets()["m"], c.calibrate(0.9, "m")
    ((0.2, 2), 0.7)
    """

    def __init__(self, *, min_pairs: int = DEFAULT_MIN_PAIRS) -> None:
        if min_pairs < 1:
            raise ValueError(f"min_pairs: must be at least 1, got {min_pairs!r}")
        self.min_pairs = min_pairs
        self._sums: dict[str, list[float]] = {}

    def learn_one(self, model: str, *, judge: float, person: float) -> None:
        acc = self._sums.setdefault(model, [0.0, 0.0])
        acc[0] += judge - person
        acc[1] += 1

    def offsets(self) -> dict[str, tuple[float, int]]:
        """Per model: ``(mean of judge - person, pairs)``."""
        return {m: (round(total / n, 12), int(n)) for m, (total, n) in self._sums.items()}

    def applies(self, model: str) -> bool:
        return self._sums.get(model, [0.0, 0.0])[1] >= self.min_pairs

    def calibrate(self, score: float, model: str) -> float:
        """:func:`calibrated` with the pairs learned so far."""
        total, n = self._sums.get(model, [0.0, 0.0])
        mine = {model: (total / n, int(n))} if n else {}
        return calibrated(score, model, mine, min_pairs=self.min_pairs)
