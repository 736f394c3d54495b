"""initial schema and views

Revision ID: 0001
Revises:
Create Date: 2026-11-27

All tables, the index that serves the elite/top queries, and the user views of db/views.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.views import VIEWS_0001 as VIEWS

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "running",
                "completed",
                "failed",
                "stopped",
                name="runstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("dataset", sa.String(length=128), nullable=False),
        sa.Column("budget", sa.String(length=64), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_table(
        "adapters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("base_model", sa.Text(), nullable=False),
        sa.Column("n_examples", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_adapters_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adapters")),
        sa.UniqueConstraint("run_id", "version", name=op.f("uq_adapters_run_id_version")),
    )
    op.create_table(
        "architectures",
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=True),
        sa.Column("num_perm", sa.Integer(), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("scheme", sa.String(length=16), nullable=True),
        sa.Column("shingle_size", sa.Integer(), nullable=True),
        sa.Column("param_count", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_run", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["first_run"], ["runs.id"], name=op.f("fk_architectures_first_run_runs")
        ),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_architectures")),
    )
    op.create_table(
        "cycles",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("t", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("running", "completed", name="cyclestatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("gamma_t", sa.Float(), nullable=True),
        sa.Column("n_elites", sa.Integer(), nullable=True),
        sa.Column("n_evaluators", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_cycles_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "t", name=op.f("pk_cycles")),
    )
    op.create_table(
        "candidates",
        sa.Column("id", sa.String(length=176), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("parent_hash", sa.String(length=64), nullable=True),
        sa.Column("arch_hash", sa.String(length=64), nullable=True),
        sa.Column(
            "mode",
            sa.Enum("delta", "full", name="candidatemode", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("adapter_version", sa.Integer(), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("raw_output", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "generated",
                "rejected",
                "admitted",
                "evaluating",
                "evaluated",
                "failed",
                name="candidatestatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("error_class", sa.String(length=32), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("nearest_hash", sa.String(length=64), nullable=True),
        sa.Column("nearest_jaccard", sa.Float(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["arch_hash"],
            ["architectures.hash"],
            name=op.f("fk_candidates_arch_hash_architectures"),
        ),
        sa.ForeignKeyConstraint(
            ["parent_hash"],
            ["architectures.hash"],
            name=op.f("fk_candidates_parent_hash_architectures"),
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_candidates_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candidates")),
        sa.UniqueConstraint(
            "run_id",
            "cycle",
            "slot",
            "attempt",
            name=op.f("uq_candidates_run_id_cycle_slot_attempt"),
        ),
    )
    op.create_index(op.f("ix_candidates_arch_hash"), "candidates", ["arch_hash"], unique=False)
    op.create_index(
        op.f("ix_candidates_run_id_arch_hash"), "candidates", ["run_id", "arch_hash"], unique=False
    )
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("arch_hash", sa.String(length=64), nullable=False),
        sa.Column("candidate_id", sa.String(length=176), nullable=True),
        sa.Column("dataset", sa.String(length=128), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("budget", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("epochs_done", sa.Float(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("samples_per_s", sa.Float(), nullable=True),
        sa.Column("worker_id", sa.String(length=128), nullable=True),
        sa.Column("node_id", sa.String(length=128), nullable=True),
        sa.Column("gpu_id", sa.String(length=64), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("error_class", sa.String(length=32), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["arch_hash"],
            ["architectures.hash"],
            name=op.f("fk_evaluations_arch_hash_architectures"),
        ),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["candidates.id"], name=op.f("fk_evaluations_candidate_id_candidates")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_evaluations_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
        sa.UniqueConstraint(
            "run_id",
            "arch_hash",
            "dataset",
            "seed",
            "budget",
            name=op.f("uq_evaluations_run_id_arch_hash_dataset_seed_budget"),
        ),
    )
    op.create_index(
        op.f("ix_evaluations_run_id_dataset_budget_arch_hash_score"),
        "evaluations",
        ["run_id", "dataset", "budget", "arch_hash", "score"],
        unique=False,
    )
    for sql in VIEWS.values():
        op.execute(sql)


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_index(
        op.f("ix_evaluations_run_id_dataset_budget_arch_hash_score"), table_name="evaluations"
    )
    op.drop_table("evaluations")
    op.drop_index(op.f("ix_candidates_run_id_arch_hash"), table_name="candidates")
    op.drop_index(op.f("ix_candidates_arch_hash"), table_name="candidates")
    op.drop_table("candidates")
    op.drop_table("cycles")
    op.drop_table("architectures")
    op.drop_table("adapters")
    op.drop_table("runs")
