"""`envfarm verify web APP SCRIPT` and its alias `python -m envfarm.verifiers.web`, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

WEBAPPS = Path(__file__).parent / "webapps"
VERIFY_WEB = [sys.executable, "-m", "envfarm.cli", "verify", "web"]
ALIAS = [sys.executable, "-m", "envfarm.verifiers.web"]


def run(cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("cmd", [VERIFY_WEB, ALIAS], ids=["verify-web", "alias"])
def test_an_unreadable_script_is_one_clear_line(cmd: list[str], tmp_path: Path) -> None:
    result = run(cmd, WEBAPPS / "clicker" / "correct", tmp_path / "missing.yaml")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("envfarm: error: cannot read interaction script") and "(fix: " in lines[0]


def test_the_alias_is_the_same_command() -> None:
    mine, alias = run(VERIFY_WEB, "--help"), run(ALIAS, "--help")
    assert mine.returncode == alias.returncode == 0
    assert " ".join(mine.stdout.replace("python -m envfarm.cli", "envfarm").split()) == " ".join(alias.stdout.split())
    assert "--judge-weight" in alias.stdout and "--out" in alias.stdout


@pytest.mark.browser
def test_verify_web_rewards_a_correct_app_and_writes_the_report(web_ready: None, tmp_path: Path) -> None:
    result = run(VERIFY_WEB, WEBAPPS / "clicker" / "correct", WEBAPPS / "clicker" / "script.yaml", "--out", tmp_path / "ev")
    assert result.returncode == 0, result.stderr
    reward = json.loads(result.stdout)
    assert reward["passed"] is True and reward["value"] == 1.0
    report = result.stderr.strip().splitlines()[-1].removeprefix("report: ")
    assert Path(report).is_file() and Path(report).is_relative_to(tmp_path / "ev")


@pytest.mark.browser
def test_the_alias_fails_a_broken_app_with_exit_1(web_ready: None, tmp_path: Path) -> None:
    result = run(ALIAS, WEBAPPS / "clicker" / "dead_button", WEBAPPS / "clicker" / "script.yaml", "--out", tmp_path / "ev")
    assert result.returncode == 1, result.stderr
    reward = json.loads(result.stdout)
    assert reward["passed"] is False and any("#count" in check for check in reward["details"]["failed_checks"])
