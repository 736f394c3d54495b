"""reuse: an evaluation's recipe fingerprint, and the archived result a reused one copies

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

evaluations.recipe       the training recipe's fingerprint (Recipe.fingerprint: the training
                         fields, the device kind, torch's version, on a CPU its SIMD
                         kernels); null: recorded before this revision, or its
                         evaluators were lost (worker_lost)
evaluations.reused_from  the id of the evaluation (of an earlier run) this row copies instead
                         of training again (evaluation.reuse); null: trained for its run
ix_evaluations_arch_hash_dataset_budget_seed
                         finds an earlier run's result for a program, dataset, budget, seed
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEX = "ix_evaluations_arch_hash_dataset_budget_seed"


def upgrade() -> None:
    op.add_column("evaluations", sa.Column("recipe", sa.String(length=16), nullable=True))
    op.add_column("evaluations", sa.Column("reused_from", sa.Integer(), nullable=True))
    op.create_index(
        op.f(INDEX), "evaluations", ["arch_hash", "dataset", "budget", "seed"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f(INDEX), table_name="evaluations")
    op.drop_column("evaluations", "reused_from")
    op.drop_column("evaluations", "recipe")
