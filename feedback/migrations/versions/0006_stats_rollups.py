"""Roll-ups for the dashboard and the stats API: decisions, outcomes and feedback summed
per hour and per day (``feedback/stats/``), and an index on ``outcomes.created_at`` to
find the hours that late outcomes change.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _period() -> list[sa.Column[Any]]:
    return [sa.Column("grain", sa.String(length=1), nullable=False),
            sa.Column("start", sa.BigInteger(), nullable=False),
            sa.Column("tenant", sa.String(length=64), nullable=False)]


# The roll-ups are read by ranges of their primary key: on SQLite the rows are stored in
# its order (WITHOUT ROWID), so a range is read in one pass with no second lookup.
_CLUSTERED = {"sqlite_with_rowid": False}


def upgrade() -> None:
    op.create_table(
        "stats_traffic",
        *_period(),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("policy_version", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False)
          for name in ("decisions", "exploratory", "feedback")),
        sa.Column("score_sum", sa.Float(), nullable=False),
        sa.Column("reward_sum", sa.Float(), nullable=False),
        sa.Column("cost_n", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("priced_n", sa.BigInteger(), nullable=False),
        sa.Column("priced_cost_usd", sa.Float(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("latency_n", sa.BigInteger(), nullable=False),
        sa.Column("latency_sum", sa.Float(), nullable=False),
        sa.Column("ttft_n", sa.BigInteger(), nullable=False),
        sa.Column("ttft_sum", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("grain", "start", "tenant", "model", "kind",
                                "policy_version", "status"),
        **_CLUSTERED,
    )
    op.create_table(
        "stats_tasks",
        *_period(),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("decisions", sa.BigInteger(), nullable=False),
        sa.Column("feedback", sa.BigInteger(), nullable=False),
        sa.Column("score_sum", sa.Float(), nullable=False),
        sa.Column("cost_n", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("grain", "start", "tenant", "task", "model"),
        **_CLUSTERED,
    )
    op.create_table(
        "stats_histograms",
        *_period(),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("bin", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        # metric before start: a question reads one metric's range; on PostgreSQL the
        # count rides in the index too (an index-only scan).
        sa.PrimaryKeyConstraint("grain", "metric", "start", "tenant", "model", "bin",
                                postgresql_include=["count"]),
        **_CLUSTERED,
    )
    op.create_table(
        "stats_periods",
        sa.Column("grain", sa.String(length=1), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("grain", "start"),
    )
    op.create_index("ix_stats_periods_built_at", "stats_periods", ["built_at"])
    op.create_table(
        "stats_state",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("outcomes") as batch_op:
        batch_op.create_index("ix_outcomes_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outcomes") as batch_op:
        batch_op.drop_index("ix_outcomes_created_at")
    for table in ("stats_state", "stats_periods", "stats_histograms", "stats_tasks",
                  "stats_traffic"):
        op.drop_table(table)
