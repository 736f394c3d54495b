"""driver state: the elite set per cycle, the cycle's settings, the evaluator target

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

cycles.elites   E_t as it was when cycle t completed ([{hash, score, n_seeds}, ...]): the
                next cycle's parents come from it, so a resumed driver draws the same ones.
cycles.settings what cycle t ran with (seeds per architecture, budget, reliability gate).
runs.evaluators_target  the evaluator count `llmnas scale` asks a running driver for.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD/DROP COLUMN (SQLite >= 3.35 has both): a batch copy of `runs` would trip the
    # foreign keys that point at it
    op.add_column("cycles", sa.Column("elites", sa.JSON(), nullable=True))
    op.add_column("cycles", sa.Column("settings", sa.JSON(), nullable=True))
    op.add_column("runs", sa.Column("evaluators_target", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "evaluators_target")
    op.drop_column("cycles", "settings")
    op.drop_column("cycles", "elites")
