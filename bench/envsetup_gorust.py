"""Go and Rust env setup on real repositories: `bench.envsetup_lang` run over the Go and Rust list.

Same pipeline, report and results file (bench/results/envsetup_lang.json, merged with the other
languages' entries). Neither the Go module proxy nor crates.io is reachable here, so the list is Go
modules that need no downloads (standard library only) and Rust crates with and without dependencies:
the ones with dependencies show the `dependency_unreachable` failure a user without a mirror would see.
Pull requests: the newest issue-linked fixes from each repository's own history (issue text is
synthesized from commit messages, offline).

    PYTHONPATH=. python -m bench.envsetup_gorust --home /work/data/gorust-bench --repeats 1
    PYTHONPATH=. python -m bench.envsetup_gorust --report-only --home H1 --home H2   # stores of runs cut short

`--report-only` writes the report from what the stores hold (candidates still pending are reported as
such), for runs stopped before the end: mining is resumable, the report is not made until it ends.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import envsetup_lang
from bench.common import machine_load, machine_notes, write_results

# (repository, curated PR numbers, dataset, newest issue-linked PRs from history to try)
REPOSITORIES: list[tuple[str, list[int], str, int]] = [
    ("spf13/pflag", [], "", 6),
    ("google/uuid", [], "", 6),
    ("go-chi/chi", [], "", 6),
    ("Masterminds/semver", [], "", 6),
    ("BurntSushi/toml", [], "", 6),
    ("gorilla/mux", [], "", 6),
    ("cuviper/autocfg", [], "", 6),
    ("sfackler/rust-fallible-iterator", [], "", 6),
    ("rust-lang/pkg-config-rs", [], "", 6),
    ("dtolnay/semver", [], "", 6),
    ("BurntSushi/ripgrep", [], "SWE-bench Multilingual", 3),
    ("sharkdp/bat", [], "SWE-bench Multilingual", 3),
]


def report_only(homes: list[Path]) -> int:
    from envfarm.store import Store

    load_at_start = machine_load()
    repos: dict[str, dict] = {}
    for home in homes:
        store = Store(f"sqlite:///{home.resolve() / 'envfarm.db'}")
        for repo, curated, dataset, _ in REPOSITORIES:
            report = envsetup_lang.repo_report(store, repo, curated, dataset)
            if report["repo_status"] != "not_scanned":
                repos[repo] = {**report, "store": str(home / "envfarm.db")}
    previous = envsetup_lang.RESULTS_PATH.exists() and json.loads(envsetup_lang.RESULTS_PATH.read_text()).get("repositories", {}) or {}
    repos = {**{r: v for r, v in previous.items() if r not in repos}, **repos}
    payload = {
        "what": "env setup and validation on real JavaScript/TypeScript, Go and Rust repositories (envfarm mine, language auto-detected)",
        "per_language": envsetup_lang.language_totals(repos),
        "repositories": repos,
        "machine": machine_notes(load_at_start),
    }
    print(json.dumps(payload["per_language"], indent=2))
    print(f"wrote {write_results('envsetup_lang', payload)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--home", type=Path, action="append", default=[])
    known, rest = parser.parse_known_args(argv)
    if known.report_only:
        return report_only(known.home or [Path("/work/data/gorust-bench")])
    envsetup_lang.REPOSITORIES = REPOSITORIES
    return envsetup_lang.main([*rest, *(a for h in known.home[:1] for a in ("--home", str(h)))])


if __name__ == "__main__":
    raise SystemExit(main())
