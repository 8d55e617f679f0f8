"""The mining job: repositories -> candidates -> env images -> validated tasks, resumable, on Ray.

Work fans out in three kinds of units, each idempotent against the store so a killed job resumes
where it stopped: `scan_repo` (sources, mirror, candidate selection; one per repository), `build_group`
(one env image per repository and version), `validate_candidate` (instance image + validation; one per
candidate). A finished candidate (validated, rejected, filtered, env failed) is never redone;
candidates that hit an infrastructure error are retried on the next run.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from envfarm import sandbox as sandboxes
from envfarm.errors import EnvfarmError, SandboxError
from envfarm.images import ensure_image, layer_bytes
from envfarm.images.build import ImageBuildError
from envfarm.sandbox import Sandbox
from envfarm.store import Store, open_store
from envfarm.tasks.candidates import Candidate, FilterConfig, Rejection, select_all
from envfarm.tasks.envsetup import recipes_for
from envfarm.tasks.envsetup.base import BuildOptions
from envfarm.tasks.envsetup.build import build_env
from envfarm.tasks.envsetup.failures import classify_build_failure, excerpt
from envfarm.tasks.instance import instance_recipe
from envfarm.tasks.language import LanguageUndetected, detect_language
from envfarm.tasks.mirror import Mirror, MirrorError
from envfarm.tasks.patchsplit import runner_targets
from envfarm.tasks.sources.jsonl import records_read
from envfarm.tasks.sources.records import RepoActivity, SourceError
from envfarm.tasks.store import TERMINAL, candidate_states, env_row, record_candidate, record_env, record_repo
from envfarm.tasks.validate import InfraFailure, validate
from envfarm.tasks.work import BuildUnit, BuiltEnv, EnvGroup, ScanUnit, Unit, ValidateUnit, WorkItem, task_spec

ProgressHook = Callable[[str, int], None]
AUTO_LANGUAGE = "auto"  # FilterConfig.language: detect each repository's language (envfarm.tasks.language)


@dataclass
class MineConfig:
    home: Path = field(default_factory=lambda: Path(os.environ.get("ENVFARM_HOME", ".envfarm")).resolve())
    offline_dir: Path | None = None
    api_url: str = "https://api.github.com"
    max_prs: int | None = None
    filters: FilterConfig = field(default_factory=FilterConfig)
    options: BuildOptions = field(default_factory=BuildOptions)
    repeats: int = 3
    test_timeout: float = 900.0
    retry_failed: bool = False
    infra_retries: int = 2
    run_id: str = "mine"

    @property
    def mirrors(self) -> Path:
        return self.home / "mirrors"


def parse_repo_line(line: str) -> tuple[str, str] | None:
    """'owner/name [clone-url]' -> (repo, url); blank lines and # comments -> None."""
    line = line.split("#", 1)[0].strip()
    if not line:
        return None
    parts = line.split()
    repo = parts[0].removeprefix("https://github.com/").removesuffix(".git").strip("/")
    if repo.count("/") != 1:
        raise EnvfarmError(f"{line!r} is not owner/name", "write one repository per line as owner/name [clone-url]")
    return repo, (parts[1] if len(parts) > 1 else "")


def load_activity(repo: str, config: MineConfig) -> RepoActivity:
    if config.offline_dir is not None:
        from envfarm.tasks.sources.jsonl import load_repo

        return load_repo(config.offline_dir, repo)
    from envfarm.tasks.sources.github import GitHubClient

    client = GitHubClient(base_url=config.api_url, cache_dir=config.home / "github-cache")
    try:
        return client.repo_activity(repo, max_prs=config.max_prs)
    finally:
        client.close()


def scan_repo(repo: str, url: str, config: MineConfig, store: Store) -> list[EnvGroup]:
    """Sources + mirror + candidates; records every PR's funnel row; returns unfinished work by env.

    A repository that yields nothing to mine from is a failed scan with its reason class, the problem and
    its fix (what `envfarm mine` prints), never "scanned" with an all-zero funnel."""
    skipped: list[str] = []
    try:
        activity = load_activity(repo, config)
        skipped = activity.skipped
        if config.offline_dir is not None and activity.skipped and not records_read(activity):
            raise SourceError(
                f"no readable record in the offline dump of {repo}: all {len(activity.skipped)} line(s) skipped, first: {activity.skipped[0]}",
                'write one JSON object per line: {"type": "issue"|"pull"|"timeline"|"comment", "data": {...}} (see tasks/sources/jsonl.py)',
                reason_class="dump_unreadable",
            )
        mirror = Mirror.ensure(config.mirrors, repo, url or activity.clone_url or f"https://github.com/{repo}.git")
    except (SourceError, MirrorError) as exc:
        record_repo(store, repo, "failed", exc.reason_class, exc.line(),
                    detail={"problem": exc.problem, "fix": exc.fix, "skipped_lines": skipped[:20], "skipped_count": len(skipped)})
        return []
    language, evidence = config.filters.language, "given"
    try:
        if language == AUTO_LANGUAGE:
            detection = detect_language(mirror, "HEAD")
            language, evidence = detection.language, detection.evidence
        recipes = recipes_for(language)
    except LanguageUndetected as exc:
        record_repo(store, repo, "failed", exc.reason_class, exc.line(), detail={"problem": exc.problem, "fix": exc.fix})
        return []
    except EnvfarmError as exc:
        record_repo(store, repo, "failed", "language_unsupported", f"{language}: {exc.line()}",
                    detail={"problem": exc.problem, "fix": exc.fix, "language": language, "language_evidence": evidence})
        return []
    filters = replace(config.filters, language=language)
    done = candidate_states(store, repo)
    results = select_all(activity, mirror, filters, config.max_prs)
    pending: list[Candidate] = []
    for result in results:
        status = done.get(result.instance_id)
        if status in TERMINAL and not (config.retry_failed and status in ("env_failed", "rejected")):
            continue
        if isinstance(result, Rejection):
            record_candidate(store, result.instance_id, repo, result.pr_number, "candidate", "filtered", result.reason_class, result.reason, detail=result.detail)
        else:
            pending.append(result)
    record_repo(store, repo, "scanned", detail={"pull_requests": len(activity.pulls), "issues": len(activity.issues), "skipped_lines": activity.skipped[:20], "skipped_count": len(activity.skipped), "candidates": sum(isinstance(r, Candidate) for r in results),
                                        "language": language, "language_evidence": evidence})
    by_version: dict[str, list[Candidate]] = defaultdict(list)
    for cand in pending:
        by_version[recipes.version(mirror, cand.base_commit)].append(cand)
    groups = []
    for version, cands in sorted(by_version.items()):
        cands.sort(key=lambda c: mirror.commit_time(c.base_commit))
        items = [WorkItem.from_candidate(c) for c in cands]
        key = f"{repo}@{version}"
        previous = env_row(store, key)
        env_commit = (previous.install_config or {}).get("environment_setup_commit") if previous and previous.status == "ok" else None
        dates = [i.created_at for i in items if i.created_at]
        groups.append(EnvGroup(repo, version, env_commit or cands[0].base_commit, min(dates) if dates else None, str(mirror.path), items, language))
        for item in items:
            record_candidate(store, item.instance_id, repo, item.pr_number, "candidate", "pending", env_key=key, detail={"link": item.link})
    return groups


def build_group(group: EnvGroup, config: MineConfig, store: Store) -> BuiltEnv | None:
    """Build (or reuse) the group's env image; on failure every candidate of the group records why."""
    previous = env_row(store, group.key)
    if previous is not None and previous.status == "failed" and not config.retry_failed:
        result_ok, image, install = False, "", {}
        reason_class, reason = previous.reason_class, previous.reason
    else:
        mirror = Mirror(Path(group.mirror_path))
        existing = {p for p in mirror.ls(group.env_commit)}
        if group.language == "python":
            collect = [p for item in group.items for p in item.test_files if p in existing and p.endswith(".py")]
        else:
            collect = [p for item in group.items for p in runner_targets(item.test_patch, group.language) if p in existing]
        result = build_env(mirror, group.repo, group.version, group.env_commit, group.date, sorted(set(collect)), config.options, language=group.language)
        install = result.install.model_dump() if result.install else {}
        install["environment_setup_commit"] = group.env_commit
        record_env(store, group.key, group.repo, group.version, "ok" if result.ok else "failed", result.image, install,
                   result.attempts_json(), result.reason_class, result.reason, result.seconds)
        result_ok, image, reason_class, reason = result.ok, result.image, result.reason_class, result.reason
    if not result_ok:
        for item in group.items:
            record_candidate(store, item.instance_id, group.repo, item.pr_number, "env", "env_failed", reason_class, reason, group.key)
        return None
    return BuiltEnv.from_stored(image or (previous.image if previous else ""), install)


def validate_candidate(item: WorkItem, group: EnvGroup, env: BuiltEnv, config: MineConfig, store: Store) -> str:
    """Instance image + validation for one candidate; returns the candidate's new status."""
    mirror = Mirror(Path(group.mirror_path))
    key = group.key
    last: InfraFailure | None = None
    for _attempt in range(config.infra_retries + 1):
        try:
            started = time.monotonic()
            built = ensure_image(instance_recipe(mirror, item.instance_id, env.image, group.env_commit, item.base_commit, item.test_files))
            layer = layer_bytes(built.tag, env.image)
            directives = runner_targets(item.test_patch, group.language)
            task = task_spec(item, group, env, built.tag, group.language, directives)
            verdict = validate(task, repeats=config.repeats, timeout=config.test_timeout,
                               sandbox=lambda image, task_id: _sandbox(image, task_id, config.run_id))
        except InfraFailure as exc:
            last = exc
            continue
        except ImageBuildError as exc:
            reason_class = classify_build_failure(exc.log or exc.problem)
            if reason_class == "disk_full":
                last = InfraFailure("disk_full", exc.problem)
                continue
            record_candidate(store, item.instance_id, item.repo, item.pr_number, "validation", "rejected", "instance_build_failed",
                             f"{exc.problem}\n{excerpt(exc.log)}", key)
            return "rejected"
        except SandboxError as exc:
            last = InfraFailure("engine_error", exc.line())
            continue
        detail = {"instance_layer_bytes": layer, "instance_build_seconds": round(built.seconds, 2), "instance_cached": built.cached,
                  "validation_seconds": round(time.monotonic() - started, 2), "runs": verdict.runs, "flaky": verdict.flaky}
        if verdict.accepted:
            task = task.model_copy(update={"FAIL_TO_PASS": verdict.fail_to_pass, "PASS_TO_PASS": verdict.pass_to_pass})
            record_candidate(store, item.instance_id, item.repo, item.pr_number, "validation", "validated", env_key=key, detail=detail, task=task)
            return "validated"
        record_candidate(store, item.instance_id, item.repo, item.pr_number, "validation", "rejected", verdict.reason_class, verdict.reason, key, detail)
        return "rejected"
    assert last is not None
    record_candidate(store, item.instance_id, item.repo, item.pr_number, "validation", "infra_error", last.reason_class, last.reason, key)
    return "infra_error"


def _sandbox(image: str, task_id: str, run_id: str) -> Sandbox:
    return sandboxes.open(image, run_id=run_id, task_id=task_id)


# -- drivers --------------------------------------------------------------------------------------

def unit_failed(store: Store, unit: Unit, exc: BaseException) -> None:
    """A bug or an unexpected error in one unit is recorded against that unit; the batch goes on.

    Candidates land in `infra_error`, which the next run retries; nothing is counted as a task result.
    """
    reason = f"{type(exc).__name__}: {exc}"[:2000]
    if isinstance(unit, ScanUnit):
        record_repo(store, unit.repo, "failed", "internal_error", reason)
    elif isinstance(unit, BuildUnit):
        for item in unit.group.items:
            record_candidate(store, item.instance_id, item.repo, item.pr_number, "env", "infra_error", "internal_error", reason, unit.group.key)
    else:
        item = unit.item
        record_candidate(store, item.instance_id, item.repo, item.pr_number, "validation", "infra_error", "internal_error", reason)


def run_inline(repos: list[tuple[str, str]], config: MineConfig, store: Store, on_progress: ProgressHook | None = None) -> None:
    """Everything in this process, in order: the simplest driver, used by tests and `--workers 0`."""
    tick = on_progress or (lambda _what, _n=1: None)
    for repo, url in repos:
        try:
            groups = scan_repo(repo, url, config, store)
        except Exception as exc:  # noqa: BLE001 - one repository's bug must not end the batch
            unit_failed(store, ScanUnit(repo, url), exc)
            groups = []
        tick("repos", 1)
        tick("candidates", sum(len(g.items) for g in groups))
        for group in groups:
            try:
                env = build_group(group, config, store)
            except Exception as exc:  # noqa: BLE001
                unit_failed(store, BuildUnit(group), exc)
                continue
            if env is None:
                continue
            tick("env_ok", len(group.items))
            for item in group.items:
                try:
                    status = validate_candidate(item, group, env, config, store)
                except Exception as exc:  # noqa: BLE001
                    unit_failed(store, ValidateUnit(item, group), exc)
                    continue
                if status == "validated":
                    tick("validated", 1)


def run_ray(repos: list[tuple[str, str]], config: MineConfig, store_url: str, workers: int, on_progress: ProgressHook | None = None) -> None:
    """Fan out on Ray: repositories, then env groups, then candidates, as results arrive."""
    import ray

    tick = on_progress or (lambda _what, _n=1: None)
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    scan = ray.remote(num_cpus=1, memory=1 << 30, max_retries=2)(_remote_scan)
    build = ray.remote(num_cpus=1, memory=2 << 30, max_retries=2)(_remote_build)
    check = ray.remote(num_cpus=1, memory=2 << 30, max_retries=2)(_remote_validate)
    store = open_store(store_url)
    pending: dict[Any, Unit] = {scan.remote(r, u, config, store_url): ScanUnit(r, u) for r, u in repos}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        ref = ready[0]
        unit = pending.pop(ref)
        try:
            value = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - a worker's crash is recorded against its unit
            unit_failed(store, unit, exc)
            if isinstance(unit, ScanUnit):
                tick("repos", 1)
            continue
        if isinstance(unit, ScanUnit):
            tick("repos", 1)
            tick("candidates", sum(len(g.items) for g in value))
            for group in value:
                pending[build.remote(group, config, store_url)] = BuildUnit(group)
        elif isinstance(unit, BuildUnit):
            if value is None:
                continue
            tick("env_ok", len(unit.group.items))
            for item in unit.group.items:
                pending[check.remote(item, unit.group, value, config, store_url)] = ValidateUnit(item, unit.group)
        elif value == "validated":
            tick("validated", 1)


def _remote_scan(repo: str, url: str, config: MineConfig, store_url: str) -> list[EnvGroup]:
    return scan_repo(repo, url, config, open_store(store_url))


def _remote_build(group: EnvGroup, config: MineConfig, store_url: str) -> BuiltEnv | None:
    return build_group(group, config, open_store(store_url))


def _remote_validate(item: WorkItem, group: EnvGroup, env: BuiltEnv, config: MineConfig, store_url: str) -> str:
    return validate_candidate(item, group, env, config, open_store(store_url))
