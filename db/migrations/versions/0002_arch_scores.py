"""arch_scores: per-architecture running means for the elite and top queries

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Backfills the table from the evaluations already archived.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "arch_scores",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("arch_hash", sa.String(length=64), nullable=False),
        sa.Column("dataset", sa.String(length=128), nullable=False),
        sa.Column("budget", sa.String(length=64), nullable=False),
        sa.Column("n_seeds", sa.Integer(), nullable=False),
        sa.Column("score_sum", sa.Float(), nullable=False),
        sa.Column("mean_score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["arch_hash"],
            ["architectures.hash"],
            name=op.f("fk_arch_scores_arch_hash_architectures"),
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_arch_scores_run_id_runs")),
        sa.PrimaryKeyConstraint(
            "run_id", "arch_hash", "dataset", "budget", name=op.f("pk_arch_scores")
        ),
    )
    op.create_index(
        "ix_arch_scores_rank",
        "arch_scores",
        ["run_id", "dataset", "budget", sa.text("mean_score DESC"), "arch_hash"],
        unique=False,
    )
    op.execute(
        "INSERT INTO arch_scores (run_id, arch_hash, dataset, budget, n_seeds, score_sum, "
        "mean_score) SELECT run_id, arch_hash, dataset, budget, COUNT(*), SUM(score), "
        "AVG(score) FROM evaluations WHERE score IS NOT NULL "
        "GROUP BY run_id, arch_hash, dataset, budget"
    )


def downgrade() -> None:
    op.drop_index("ix_arch_scores_rank", table_name="arch_scores")
    op.drop_table("arch_scores")
