"""The miner's bookkeeping: per-repository, per-environment and per-candidate status with reasons.

Why tables rather than logs: the funnel (candidates -> env built -> validated, failures by reason class)
is a query, and resume reads the same rows to skip finished work after a kill.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from envfarm.store.models import Base, utcnow


class MiningRepoRow(Base):
    __tablename__ = "mining_repos"
    repo: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), default="pending")  # pending | scanned | failed
    reason_class: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class MiningEnvRow(Base):
    """One environment per (repository, version): the recipe that worked, or every attempt's failure."""

    __tablename__ = "mining_envs"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)  # repo@version
    repo: Mapped[str] = mapped_column(String(255), index=True)
    version: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(32), default="pending")  # pending | ok | failed
    reason_class: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    image: Mapped[str] = mapped_column(String(255), default="")
    install_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[list[Any]] = mapped_column(JSON, default=list)
    build_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class MiningCandidateRow(Base):
    """One pull request's way through the funnel. `stage` is the last stage reached."""

    __tablename__ = "mining_candidates"
    __table_args__ = (Index("ix_mining_candidates_stage_status", "stage", "status"),)
    instance_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    repo: Mapped[str] = mapped_column(String(255), index=True)
    pr_number: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(32))  # candidate | env | validation
    status: Mapped[str] = mapped_column(String(32))  # filtered | pending | env_failed | validated | rejected | infra_error
    reason_class: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    env_key: Mapped[str] = mapped_column(String(255), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
