"""Grades no one posted (the sampled judge's, implicit signals') and corrections (a
person's score that replaced a learned grade); ``feedback.grade_id`` names the grade a
feedback was promoted from (docs/judge.md).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # A nullable column without a default: SQLite adds it in place (no table copy).
    op.add_column("feedback", sa.Column("grade_id", sa.BigInteger(), nullable=True))
    op.create_table(
        "grades",
        sa.Column("id", _SEQ, autoincrement=True, nullable=False),
        sa.Column("decision_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("feedback_seq", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["decision_id"], ["decisions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("decision_id", "source", name="uq_grades_decision_source"),
    )
    op.create_index("ix_grades_decision_id", "grades", ["decision_id"])
    op.create_index("ix_grades_created_at", "grades", ["created_at"])
    op.create_table(
        "corrections",
        sa.Column("id", _SEQ, autoincrement=True, nullable=False),
        sa.Column("feedback_seq", _SEQ, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("score_before", sa.Float(), nullable=False),
        sa.Column("reward_before", sa.Float(), nullable=False),
        sa.Column("reward_after", sa.Float(), nullable=False),
        sa.Column("checkpoint_id", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["feedback_seq"], ["feedback.seq"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_corrections_feedback_seq", "corrections", ["feedback_seq"])
    op.create_index("ix_corrections_checkpoint_id", "corrections", ["checkpoint_id"])


def downgrade() -> None:
    op.drop_table("corrections")
    op.drop_table("grades")
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("grade_id")
