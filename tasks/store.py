"""The miner's view of the store: funnel rows, idempotent task writes, and the funnel report.

Every write is one transaction: a task row and its candidate row change together, so a killed worker
leaves either the old state or the new one, never half a task.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select

import envfarm.store.mining  # noqa: F401  (registers the mining tables on Base.metadata)
from envfarm.store import Store, TaskRow
from envfarm.store.mining import MiningCandidateRow, MiningEnvRow, MiningRepoRow
from envfarm.task import TaskSpec

TERMINAL = frozenset({"filtered", "env_failed", "validated", "rejected"})


def record_repo(store: Store, repo: str, status: str, reason_class: str = "", reason: str = "", detail: dict[str, Any] | None = None) -> None:
    with store.session() as session:
        row = session.get(MiningRepoRow, repo) or MiningRepoRow(repo=repo)
        row.status, row.reason_class, row.reason, row.detail = status, reason_class, reason[:4000], detail or {}
        session.merge(row)


def record_candidate(store: Store, instance_id: str, repo: str, pr_number: int, stage: str, status: str,
                     reason_class: str = "", reason: str = "", env_key: str = "", detail: dict[str, Any] | None = None,
                     task: TaskSpec | None = None) -> None:
    """Upsert the candidate's funnel row, and (for a validated task) its task row, in one transaction."""
    with store.session() as session:
        row = session.get(MiningCandidateRow, instance_id)
        if row is None:
            row = MiningCandidateRow(instance_id=instance_id, repo=repo, pr_number=pr_number, attempts=0, detail={})
            session.add(row)
        row.stage, row.status, row.reason_class, row.reason = stage, status, reason_class, reason[:4000]
        row.env_key = env_key or row.env_key or ""
        row.attempts = (row.attempts or 0) + (1 if stage == "validation" else 0)
        row.detail = {**(row.detail or {}), **(detail or {})}
        if task is not None:
            session.merge(TaskRow(
                instance_id=task.instance_id, repo=task.repo, version=task.version, kind=task.kind,
                language=task.language, image=task.image, status="validated", spec=task.model_dump(mode="json"),
            ))


def candidate_states(store: Store, repo: str) -> dict[str, str]:
    with store.session() as session:
        return dict(session.execute(select(MiningCandidateRow.instance_id, MiningCandidateRow.status).where(MiningCandidateRow.repo == repo)).all())


def env_row(store: Store, key: str) -> MiningEnvRow | None:
    with store.session() as session:
        return session.get(MiningEnvRow, key)


def record_env(store: Store, key: str, repo: str, version: str, status: str, image: str = "", install: dict[str, Any] | None = None,
               attempts: list[Any] | None = None, reason_class: str = "", reason: str = "", seconds: float = 0.0) -> None:
    with store.session() as session:
        session.merge(MiningEnvRow(key=key, repo=repo, version=version, status=status, image=image, install_config=install or {},
                                   attempts=attempts or [], reason_class=reason_class, reason=reason[:4000], build_seconds=seconds))


def funnel(store: Store, repos: list[str] | None = None) -> dict[str, Any]:
    """Counts per stage plus failure reasons, for the repositories given (all if None)."""
    with store.session() as session:
        query = select(MiningCandidateRow.repo, MiningCandidateRow.status, MiningCandidateRow.reason_class)
        if repos:
            query = query.where(MiningCandidateRow.repo.in_(repos))
        rows = session.execute(query).all()
        repo_query = select(MiningRepoRow.status, MiningRepoRow.reason_class, func.count()).group_by(MiningRepoRow.status, MiningRepoRow.reason_class)
        if repos:
            repo_query = repo_query.where(MiningRepoRow.repo.in_(repos))
        repo_rows = session.execute(repo_query).all()
        env_query = select(MiningEnvRow.repo, MiningEnvRow.status, MiningEnvRow.reason_class)
        if repos:
            env_query = env_query.where(MiningEnvRow.repo.in_(repos))
        env_rows = session.execute(env_query).all()
    statuses = Counter(status for _, status, _ in rows)
    reasons = Counter(f"{status}:{reason}" for _, status, reason in rows if reason)
    per_repo: dict[str, Counter[str]] = {}
    for repo, status, _ in rows:
        per_repo.setdefault(repo, Counter())[status] += 1
    prs = len(rows)
    candidates = prs - statuses["filtered"]
    env_ok = candidates - statuses["env_failed"] - statuses["pending"]
    envs: dict[str, Counter[str]] = {}
    for repo, status, reason in env_rows:
        envs.setdefault(repo, Counter())[f"{status}{':' + reason if reason else ''}"] += 1
    env_total = len(env_rows)
    # No interpreter on this machine is not the repository's failure: counted apart, and left out of a
    # second success rate (users whose uv can fetch interpreters would not see it).
    unavailable = sum(1 for _, st, reason in env_rows if st == "failed" and reason == "python_unavailable")
    return {
        "repos": {f"{s}{':' + r if r else ''}": n for s, r, n in repo_rows},
        "env_images": {repo: dict(c) for repo, c in sorted(envs.items())},
        "env_success_rate": round(sum(1 for _, st, _ in env_rows if st == "ok") / env_total, 3) if env_total else None,
        "python_unavailable": {"env_images": unavailable,
                               "candidates": sum(1 for _, st, reason in rows if st == "env_failed" and reason == "python_unavailable")},
        "env_success_rate_available_interpreters": (round(sum(1 for _, st, _ in env_rows if st == "ok") / (env_total - unavailable), 3)
                                                    if env_total - unavailable else None),
        "pull_requests": prs,
        "candidates": candidates,
        "env_built": env_ok,
        "validated": statuses["validated"],
        "statuses": dict(statuses),
        "reasons": dict(reasons.most_common()),
        "per_repo": {repo: dict(c) for repo, c in sorted(per_repo.items())},
    }


def load_tasks(store: Store, repo: str | None = None) -> list[TaskSpec]:
    """Validated tasks as TaskSpec records (what the RL loop and the exporter read)."""
    with store.session() as session:
        query = select(TaskRow).where(TaskRow.status == "validated", TaskRow.kind == "swe").order_by(TaskRow.instance_id)
        if repo:
            query = query.where(TaskRow.repo == repo)
        return [TaskSpec.model_validate(row.spec) for row in session.scalars(query)]
