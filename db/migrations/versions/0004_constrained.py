"""constrained decoding: whether a candidate's answer was sampled under its grammar

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

candidates.constrained  true: a grammar (the parent's delta grammar, or the full-mode frame)
                        masked the answer from its first token; false: sampled freely
                        (generation.constrained off, or the grammar fell back: the reason is
                        in the candidate's message); null: recorded before this revision.
v_failures              grouped by constrained too; v_cycle_stats counts constrained answers.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.views import VIEWS, VIEWS_0001

CHANGED = ("v_failures", "v_cycle_stats")

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _replace_views(texts: dict[str, str]) -> None:
    for name in CHANGED:
        op.execute(f"DROP VIEW IF EXISTS {name}")
        op.execute(texts[name])


def upgrade() -> None:
    op.add_column("candidates", sa.Column("constrained", sa.Boolean(), nullable=True))
    _replace_views(VIEWS)


def downgrade() -> None:
    for name in CHANGED:  # the views read the column: drop them before it
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_column("candidates", "constrained")
    _replace_views(VIEWS_0001)
