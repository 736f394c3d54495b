"""utilisation: every actor's busy spans, and each evaluation's deadline

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

spans                   one row per generation call, admission, evaluation attempt (also one
                        that died with its actor or node: outcome 'lost'), study evaluation,
                        fine-tune and warm start: actor, node, GPU, start and end (Unix
                        seconds), outcome. The report's timeline, busy shares, critical path
                        and scaling advice are computed from them (llmnas_dist.analysis).
evaluations.deadline_s  the wall-clock limit the evaluation ran under (adaptive deadline);
                        null: recorded before this revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spans",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("node_id", sa.String(length=128), nullable=True),
        sa.Column("gpu_id", sa.String(length=64), nullable=True),
        sa.Column("started", sa.Float(), nullable=False),
        sa.Column("ended", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=192), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_spans_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spans")),
    )
    op.create_index(op.f("ix_spans_run_id_cycle"), "spans", ["run_id", "cycle"], unique=False)
    op.add_column("evaluations", sa.Column("deadline_s", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("evaluations", "deadline_s")
    op.drop_index(op.f("ix_spans_run_id_cycle"), table_name="spans")
    op.drop_table("spans")
