"""What the RouterBench benchmarks share: where the subset is, the issue's targets, how a
headline number prints and is computed, and the bundled wordllama embedding. Imported by the scripts
beside it (run as ``python benchmarks/NAME.py``, which puts this folder on the path).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bandit.frontier import FrontierMetrics, frontier_metrics
from bandit.outcomes import OutcomeTable
from bandit.replay import best_single_model, single_model_points

ROOT = Path(__file__).resolve().parents[1]
# (metric, comparison, target): cost in % of the best single model's cost, quality in %
# of its quality.
TARGETS = (
    ("cost_pct_for_95", "<=", 25.0),
    ("cost_pct_for_98", "<=", 40.0),
    ("quality_pct_at_10", ">=", 95.0),
)


def data_path() -> Path:
    shared = Path(os.environ.get("ROUTEBANDIT_SHARED", ROOT.parent / "shared"))
    return shared / "data" / "routerbench-subset" / "outcomes.csv"


def find_subset() -> Path | None:
    """The subset's outcome table file, or ``None`` after saying on stderr where it was
    looked for."""
    path = data_path()
    if not path.exists():
        print(f"routerbench subset not found at {path}; set ROUTEBANDIT_SHARED",
              file=sys.stderr)
        return None
    return path


def metrics_of(table: OutcomeTable, points: Iterable[tuple[float, float]]) -> FrontierMetrics:
    """The headline numbers of ``(cost, quality)`` points against the table's best
    single model on test, with AIQ over the replay's cost range."""
    singles = single_model_points(table)
    best = best_single_model(singles)
    return frontier_metrics(points, reference_cost=best.cost_per_prompt,
                            reference_quality=best.quality,
                            c_max=max(p.cost_per_prompt for p in singles))


def fmt(value: float | None, key: str) -> str:
    """A headline number: AIQ to four places, a percentage to one."""
    if value is None:
        return "not reached"
    return f"{value:.4f}" if key == "aiq" else f"{value:.1f}%"


def meets(value: float | None, op: str, target: float) -> bool:
    if value is None:
        return False
    return value <= target if op == "<=" else value >= target


def last_paragraph(text: str) -> str:
    """The last non-blank paragraph: the question of a few-shot prompt."""
    return next((p for p in reversed(text.split("\n\n")) if p.strip()), text)


def wordllama_embed(texts: list[str]) -> np.ndarray:
    """wordllama's 256-dimension embedding of each text, from the weights its wheel
    carries. Raises ImportError without the package, FileNotFoundError or ValueError if
    it cannot load them; never downloads."""
    import wordllama
    from wordllama import WordLlama

    # Its loader looks for the tokenizer it ships under the wrong folder name; pointing
    # its cache at the package finds both files, and nothing is downloaded.
    model = WordLlama.load(dim=256, cache_dir=Path(wordllama.__file__).parent,
                           disable_download=True)
    out: np.ndarray = np.asarray(model.embed(texts), dtype=np.float64)
    return out
