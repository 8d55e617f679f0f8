"""Verify one web app by hand: `python -m envfarm.verifiers.web APP_DIR SCRIPT.yaml [--out DIR]`.

Prints the reward as JSON and the path of the HTML report (open it in a browser)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from envfarm.errors import EnvfarmError
from envfarm.verifiers.web.judge import JudgeClient
from envfarm.verifiers.web.verifier import WebVerifier


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m envfarm.verifiers.web", description=__doc__)
    parser.add_argument("app", type=Path, help="folder with index.html")
    parser.add_argument("script", type=Path, help="interaction script (.yaml or .json)")
    parser.add_argument("--out", type=Path, default=None, help="evidence folder (default: a new temp folder)")
    parser.add_argument("--command", default=None, help="start command instead of static serving ({port} or $PORT)")
    parser.add_argument("--judge-weight", type=float, default=0.0, help="blend in the judge (needs ENVFARM_JUDGE_URL)")
    args = parser.parse_args(argv)
    try:
        app = {"root": str(args.app), **({"command": args.command} if args.command else {})}
        reward = WebVerifier(judge=JudgeClient.from_env(), judge_weight=args.judge_weight).verify_app(app, args.script, args.out)
    except EnvfarmError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        return 2
    print(reward.to_json())
    print(f"report: {reward.evidence.get('report_html', '(none)')}", file=sys.stderr)
    return 0 if reward.passed else 1


if __name__ == "__main__":
    sys.exit(main())
