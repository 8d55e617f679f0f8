"""The instance image an agent works in: the env image moved to `base_commit`, with the future removed.

Guarantees (tested in tests/tasks/test_instance_image.py):
- HEAD is `base_commit` on a single branch `main`; no other branches, tags, remotes, stash, reflogs,
  FETCH_HEAD/ORIG_HEAD or packed refs exist, so `git log --all` shows nothing after the base;
- no commit object newer than the base is even stored: if `git fsck --unreachable` finds any (the env
  layer's commit was not an ancestor of the base), the repository is repacked and pruned;
- nothing of `test_patch` is present: its new test files do not exist and the files it modifies are at
  their `base_commit` content, with a clean `git status`. (Deleting the modified files too was tried and
  dropped: with skip-worktree the graders' `git checkout <base> -- <path>` restore refuses the path, and
  without it the agent's `git diff` would carry deletions that break grading.)
The layer is thin: a bundle of only the commits between the env commit and the base, plus a checkout.
"""

from __future__ import annotations

import shlex

from envfarm.images import ImageRecipe
from envfarm.tasks.mirror import Mirror

SCRUB = (
    "git -c advice.detachedHead=false checkout -q -f --detach {base} && git clean -fdq"
    " && git for-each-ref --format='%(refname)' | xargs -r -n1 git update-ref -d"
    " && git checkout -q -B main"
    " && for r in $(git remote); do git remote remove $r; done"
    " && rm -rf .git/logs .git/FETCH_HEAD .git/ORIG_HEAD .git/packed-refs .git/refs/original .git/refs/stash"
    " && git reflog expire --expire=now --all"
    " && if git fsck --unreachable --no-reflogs --no-progress 2>/dev/null | grep -q 'unreachable commit';"
    " then git -c gc.reflogExpire=now -c gc.reflogExpireUnreachable=now gc -q --prune=now; fi"
    " && test \"$(git rev-parse HEAD)\" = {base}"
)


def instance_recipe(mirror: Mirror, instance_id: str, env_image: str, env_commit: str, base_commit: str, test_files: list[str]) -> ImageRecipe:
    files: tuple[tuple[str, bytes], ...] = ()
    script: list[str] = []
    if base_commit != env_commit and not mirror.is_ancestor(base_commit, env_commit):
        files = (("/tmp/inst.bundle", mirror.bundle(base_commit, exclude=env_commit)),)
        script.append("git fetch -q /tmp/inst.bundle 'refs/envfarm/*:refs/envfarm/*'")
    script.append(SCRUB.format(base=shlex.quote(base_commit)))
    as_agent = "runuser -u agent -- sh -c " + shlex.quote("cd /testbed && " + " && ".join(script))
    return ImageRecipe(
        kind="instance",
        name=instance_id,
        parent=env_image,
        files=files,
        steps=(f"{as_agent} && rm -f /tmp/inst.bundle",),
        labels=(("envfarm.io/instance", instance_id), ("envfarm.io/base-commit", base_commit)),
    )
