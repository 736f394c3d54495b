"""constrained decoding: whether a candidate's answer was sampled under its grammar

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

candidates.constrained  true: a grammar (the parent's delta grammar, or the full-mode frame)
                        masked the answer from its first token; false: sampled freely
                        (generation.constrained off, or the grammar fell back: the reason is
                        in the candidate's message); null: recorded before this revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("candidates", sa.Column("constrained", sa.Boolean(), nullable=True))


def downgrade() -> None:
    op.drop_column("candidates", "constrained")
