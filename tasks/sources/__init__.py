"""Where issues and pull requests come from: the GitHub REST API, or JSONL dumps of the same records."""

from envfarm.tasks.sources.records import CrossReference, Issue, PullRequest, RepoActivity, SourceError

__all__ = ["CrossReference", "Issue", "PullRequest", "RepoActivity", "SourceError"]
