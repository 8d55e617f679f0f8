"""miner bookkeeping: mining_repos, mining_envs, mining_candidates

Revision ID: 0002_mining
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = "0002_mining"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mining_repos",
        sa.Column("repo", sa.String(255), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason_class", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mining_envs",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("repo", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason_class", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("image", sa.String(255), nullable=False),
        sa.Column("install_config", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.JSON(), nullable=False),
        sa.Column("build_seconds", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mining_envs_repo", "mining_envs", ["repo"])
    op.create_table(
        "mining_candidates",
        sa.Column("instance_id", sa.String(255), primary_key=True),
        sa.Column("repo", sa.String(255), nullable=False),
        sa.Column("pr_number", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason_class", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("env_key", sa.String(255), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mining_candidates_repo", "mining_candidates", ["repo"])
    op.create_index("ix_mining_candidates_stage_status", "mining_candidates", ["stage", "status"])


def downgrade() -> None:
    op.drop_table("mining_candidates")
    op.drop_table("mining_envs")
    op.drop_table("mining_repos")
