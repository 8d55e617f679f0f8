"""The task miner: GitHub issues and pull requests -> validated, containerized SWE tasks.

Stages, one module each: `sources` (GitHub REST client and offline JSONL dumps), `mirror` (bare git
mirrors), `candidates` (issue-resolving PRs, filters with reasons), `patchsplit` (patch / test_patch),
`envsetup` (install recipes and env images, per language), `instance` (the agent-facing image, scrubbed
of the future), `validate` (FAIL_TO_PASS / PASS_TO_PASS in sandboxes), `export` (store + SWE-bench JSONL),
`pipeline` (the Ray batch job with resume and funnel).
"""
