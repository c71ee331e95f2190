"""The cost-quality plot logged with every policy version (matplotlib, no pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from feedback.evaluation import Point

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def cost_quality_figure(
    models: Sequence[Point],
    policies: Sequence[Point],
    *,
    frontier: Sequence[tuple[float, float]] = (),
    title: str = "cost vs quality",
) -> Figure:
    """Models as grey dots, policies as labelled stars, an optional frontier as a line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for p in models:
        ax.scatter([p.cost_usd], [p.quality], color="0.6")
        ax.annotate(p.label, (p.cost_usd, p.quality), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    if frontier:
        xs, ys = zip(*sorted(frontier), strict=True)
        ax.plot(xs, ys, "-", color="tab:blue", alpha=0.6, label="frontier")
    for i, p in enumerate(policies):
        ax.scatter([p.cost_usd], [p.quality], marker="*", s=160, color=f"C{i + 1}",
                   label=p.label, zorder=3)
    ax.set_xlabel("mean cost per call (USD)")
    ax.set_ylabel("mean quality")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if policies or frontier:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
