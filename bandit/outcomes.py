"""Outcome tables: every model's graded, priced answer to every prompt, for replay.

An outcome table is a CSV file in the "wide" format of the RouterBench subset:

=========================  ==========================================================
column                     meaning
=========================  ==========================================================
``id``                     prompt id, unique
``task``                   task family (may be empty)
``split``                  ``train`` or ``test`` (optional, see below)
``prompt``                 the prompt text as sent to the models
``<model>|quality``        that model's graded outcome, a number in [0, 1]
``<model>|cost_usd``       what that call cost, USD, >= 0
``<model>|output_chars``   length of that model's answer in characters, >= 0
=========================  ==========================================================

Every model needs all three ``<model>|...`` columns; any number of models (at least
one) works. Other columns without a ``|`` are ignored. Every error names the bad column
or the bad line (counted as in a text editor, the header being line 1).

When the table has no ``split`` column, :func:`load_outcomes` assigns one: a seeded
random 30 % of the prompts (rounded, at least one) becomes ``test``, the rest ``train``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bandit.errors import RequestError

REQUIRED_COLUMNS = ("id", "task", "prompt")
METRICS = ("quality", "cost_usd", "output_chars")
SPLITS = ("train", "test")
DEFAULT_TEST_FRACTION = 0.3

FloatArray = npt.NDArray[np.float64]


class OutcomeTableError(RequestError):
    """An outcome table is malformed; the message names the file, line or column."""


@dataclass(frozen=True, eq=False)
class OutcomeTable:
    """A validated outcome table held as arrays (``n`` prompts, ``k`` models).

    ``quality``, ``cost_usd`` and ``output_chars`` have shape ``(n, k)``; column ``j`` is
    ``models[j]``. ``split_assigned`` tells whether the split came from the file or was
    drawn by :func:`load_outcomes`.

    >>> t = OutcomeTable.from_rows(
    ...     ["p1", "p2"], ["qa", "qa"], ["train", "test"], ["hi", "yo"], ["a", "b"],
    ...     quality=[[1, 0], [0, 1]], cost_usd=[[0.1, 0.2], [0.1, 0.2]],
    ...     output_chars=[[10, 20], [30, 40]])
    >>> t.n_prompts, t.n_models, t.indices("test").tolist()
    (2, 2, [1])
    """

    ids: tuple[str, ...]
    tasks: tuple[str, ...]
    splits: tuple[str, ...]
    prompts: tuple[str, ...]
    models: tuple[str, ...]
    quality: FloatArray
    cost_usd: FloatArray
    output_chars: FloatArray
    split_assigned: bool = False

    def __post_init__(self) -> None:
        n, k = len(self.ids), len(self.models)
        for name in ("tasks", "splits", "prompts"):
            if len(getattr(self, name)) != n:
                raise OutcomeTableError(f"{name}: expected {n} entries, got "
                                        f"{len(getattr(self, name))}")
        for name in METRICS:
            shape = getattr(self, name).shape
            if shape != (n, k):
                raise OutcomeTableError(f"{name}: expected shape {(n, k)}, got {shape}")
        bad = sorted(set(self.splits) - set(SPLITS))
        if bad:
            raise OutcomeTableError(f"split: must be 'train' or 'test', got {bad[0]!r}")

    @classmethod
    def from_rows(
        cls,
        ids: Sequence[str],
        tasks: Sequence[str],
        splits: Sequence[str],
        prompts: Sequence[str],
        models: Sequence[str],
        *,
        quality: npt.ArrayLike,
        cost_usd: npt.ArrayLike,
        output_chars: npt.ArrayLike,
    ) -> OutcomeTable:
        """Build a table from in-memory columns (copies the arrays)."""
        return cls(
            ids=tuple(ids), tasks=tuple(tasks), splits=tuple(splits),
            prompts=tuple(prompts), models=tuple(models),
            quality=np.array(quality, dtype=np.float64),
            cost_usd=np.array(cost_usd, dtype=np.float64),
            output_chars=np.array(output_chars, dtype=np.float64),
        )

    @property
    def n_prompts(self) -> int:
        return len(self.ids)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def indices(self, split: str) -> npt.NDArray[np.int64]:
        """Row indices of one split, in file order."""
        return np.array([i for i, s in enumerate(self.splits) if s == split], dtype=np.int64)

    def subset(self, rows: Sequence[int] | npt.NDArray[np.int64]) -> OutcomeTable:
        """A table of the given rows (in the given order)."""
        idx = np.asarray(rows, dtype=np.int64)
        pick = [int(i) for i in idx]
        return OutcomeTable(
            ids=tuple(self.ids[i] for i in pick),
            tasks=tuple(self.tasks[i] for i in pick),
            splits=tuple(self.splits[i] for i in pick),
            prompts=tuple(self.prompts[i] for i in pick),
            models=self.models,
            quality=self.quality[idx].copy(),
            cost_usd=self.cost_usd[idx].copy(),
            output_chars=self.output_chars[idx].copy(),
            split_assigned=self.split_assigned,
        )

    def limit(self, n: int, *, seed: int = 0) -> OutcomeTable:
        """A seeded random sample of ``n`` prompts keeping both splits' proportions.

        Each split keeps ``round(n * its share)`` prompts and at least one, so a
        ``--limit`` run still has something to train on and something to test on.

        >>> t = OutcomeTable.from_rows(
        ...     [f"p{i}" for i in range(10)], ["x"] * 10, ["train"] * 7 + ["test"] * 3,
        ...     ["q"] * 10, ["m"], quality=[[1]] * 10, cost_usd=[[0]] * 10,
        ...     output_chars=[[1]] * 10)
        >>> [len(t.limit(4).indices(s)) for s in ("train", "test")]
        [3, 1]
        """
        if n < 2:
            raise OutcomeTableError(f"limit: must be at least 2 prompts, got {n}")
        if n >= self.n_prompts:
            return self
        rng = np.random.default_rng(seed)
        keep: list[int] = []
        for split in SPLITS:
            idx = self.indices(split)
            take = max(1, round(n * len(idx) / self.n_prompts))
            keep.extend(int(i) for i in rng.permutation(idx)[:take])
        return self.subset(np.array(sorted(keep), dtype=np.int64))


def assign_split(
    n: int, *, seed: int = 0, test_fraction: float = DEFAULT_TEST_FRACTION
) -> tuple[str, ...]:
    """A seeded random train/test split of ``n`` prompts.

    ``round(n * test_fraction)`` prompts (at least one, at most ``n - 1``) are ``test``.

    >>> assign_split(10, seed=3).count("test")
    3
    """
    if not 0.0 < test_fraction < 1.0:
        raise OutcomeTableError(f"test_fraction: must be in (0, 1), got {test_fraction!r}")
    if n < 2:
        raise OutcomeTableError(f"cannot split {n} prompt(s) into train and test")
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    test = set(np.random.default_rng(seed).permutation(n)[:n_test].tolist())
    return tuple("test" if i in test else "train" for i in range(n))


def _model_columns(header: Sequence[str], source: str) -> tuple[list[str], dict[str, int]]:
    models: list[str] = []
    where: dict[str, int] = {}
    for j, col in enumerate(header):
        if "|" not in col:
            continue
        model, _, metric = col.rpartition("|")
        if metric not in METRICS or not model:
            raise OutcomeTableError(
                f"{source}: column {col!r}: expected '<model>|<metric>' with metric one of "
                f"{', '.join(METRICS)}"
            )
        if col in where:
            raise OutcomeTableError(f"{source}: column {col!r} appears twice")
        where[col] = j
        if model not in models:
            models.append(model)
    if not models:
        raise OutcomeTableError(
            f"{source}: no model columns (expected '<model>|quality', '<model>|cost_usd' "
            "and '<model>|output_chars')"
        )
    for model in models:
        for metric in METRICS:
            if f"{model}|{metric}" not in where:
                raise OutcomeTableError(f"{source}: column '{model}|{metric}' is missing")
    return models, where


def _value(raw: str, *, col: str, line: int, source: str, upper: float | None) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise OutcomeTableError(
            f"{source}, line {line}, column {col!r}: not a number: {raw!r}"
        ) from None
    if not math.isfinite(value) or value < 0 or (upper is not None and value > upper):
        bound = f"in [0, {upper:g}]" if upper is not None else "a finite number >= 0"
        raise OutcomeTableError(
            f"{source}, line {line}, column {col!r}: must be {bound}, got {raw!r}"
        )
    return value


def load_outcomes(
    path: str | Path, *, seed: int = 0, test_fraction: float = DEFAULT_TEST_FRACTION
) -> OutcomeTable:
    """Read and validate an outcome table (see the module docstring for the format).

    ``seed`` and ``test_fraction`` are used only when the file has no ``split`` column.

    >>> import tempfile
    >>> text = "id,task,prompt,m|quality,m|cost_usd,m|output_chars\\n" + "".join(
    ...     f"p{i},t,hello,1,0.001,5\\n" for i in range(10))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d) / "o.csv"
    ...     _ = p.write_text(text)
    ...     t = load_outcomes(p)
    >>> t.models, t.split_assigned, t.splits.count("test")
    (('m',), True, 3)
    """
    p = Path(path)
    source = str(p)
    # Prompts can be long; the csv module's default field limit is 128 KiB.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise OutcomeTableError(f"{source}: cannot read outcome table ({exc.strerror})") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise OutcomeTableError(f"{source}: not a readable UTF-8 CSV file ({exc})") from exc
    if not rows:
        raise OutcomeTableError(f"{source}: empty file (expected a header row)")
    header = [c.strip() for c in rows[0]]
    for col in REQUIRED_COLUMNS:
        if col not in header:
            raise OutcomeTableError(f"{source}: column {col!r} is missing")
    has_split = "split" in header
    models, where = _model_columns(header, source)
    pos = {c: header.index(c) for c in (*REQUIRED_COLUMNS, *(("split",) if has_split else ()))}
    body = [(i + 2, r) for i, r in enumerate(rows[1:]) if any(cell.strip() for cell in r)]
    if not body:
        raise OutcomeTableError(f"{source}: no prompts (only a header row)")
    k = len(models)
    arrays = {m: np.empty((len(body), k), dtype=np.float64) for m in METRICS}
    ids: list[str] = []
    tasks: list[str] = []
    splits: list[str] = []
    prompts: list[str] = []
    seen: dict[str, int] = {}
    for r, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise OutcomeTableError(
                f"{source}, line {line}: expected {len(header)} fields, got {len(row)}"
            )
        pid = row[pos["id"]].strip()
        if not pid:
            raise OutcomeTableError(f"{source}, line {line}, column 'id': empty id")
        if pid in seen:
            raise OutcomeTableError(
                f"{source}, line {line}, column 'id': duplicate id {pid!r} (first on line "
                f"{seen[pid]})"
            )
        seen[pid] = line
        ids.append(pid)
        tasks.append(row[pos["task"]].strip())
        prompts.append(row[pos["prompt"]])
        if has_split:
            split = row[pos["split"]].strip().lower()
            if split not in SPLITS:
                raise OutcomeTableError(
                    f"{source}, line {line}, column 'split': must be 'train' or 'test', "
                    f"got {row[pos['split']]!r}"
                )
            splits.append(split)
        for j, model in enumerate(models):
            for metric in METRICS:
                col = f"{model}|{metric}"
                arrays[metric][r, j] = _value(
                    row[where[col]].strip(), col=col, line=line, source=source,
                    upper=1.0 if metric == "quality" else None,
                )
    if not has_split:
        splits = list(assign_split(len(ids), seed=seed, test_fraction=test_fraction))
    for split in SPLITS:
        if split not in splits:
            raise OutcomeTableError(f"{source}, column 'split': no {split!r} prompts")
    return OutcomeTable(
        ids=tuple(ids), tasks=tuple(tasks), splits=tuple(splits), prompts=tuple(prompts),
        models=tuple(models), quality=arrays["quality"], cost_usd=arrays["cost_usd"],
        output_chars=arrays["output_chars"], split_assigned=not has_split,
    )
