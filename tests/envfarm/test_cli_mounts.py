"""Sub-commands that stages bring (mine, train, fleet, verify) are mounted loudly.

The mount used to swallow a missing module, so a misspelt module name (`verifiers.cli` for
`envfarm.verifiers.cli`) left `envfarm verify` silently missing. Now every mount must import, and one
that cannot is listed as unavailable in `--help` and fails as one clear line when it is used.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from envfarm import cli
from envfarm.errors import EnvfarmError


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv), prog_name="envfarm")
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


@pytest.fixture
def broken_mounts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Three ways a stage's CLI can be broken: absent, missing a dependency, and without an `app`."""
    (tmp_path / "envfarm_test_needs_dep.py").write_text("import envfarm_test_dependency_not_installed\napp = None\n")
    (tmp_path / "envfarm_test_no_app.py").write_text("application = 'not a typer app'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mounts = {
        **cli.MOUNTS,
        "absent": cli.Mount("envfarm_test_module_that_does_not_exist.cli", "An absent stage."),
        "needsdep": cli.Mount("envfarm_test_needs_dep", "A stage whose dependency is not installed."),
        "noapp": cli.Mount("envfarm_test_no_app", "A stage without an app."),
    }
    monkeypatch.setattr(cli, "MOUNTS", mounts)
    monkeypatch.setattr(cli, "_LOADED", {})
    for name in ("envfarm_test_needs_dep", "envfarm_test_no_app"):
        monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.mark.parametrize("name", sorted(cli.MOUNTS))
def test_every_mounted_stage_loads_as_its_command(name: str) -> None:
    command = cli.load_mount(name, cli.MOUNTS[name])
    assert command.name == name and command.help == cli.MOUNTS[name].help


def test_the_mounts_are_sub_commands_of_envfarm(capsys: pytest.CaptureFixture[str]) -> None:
    for name in cli.MOUNTS:
        code, out, err = run_main(capsys, name, "--help")
        assert code == 0, err
        assert f"envfarm {name}" in out and cli.MOUNTS[name].help.split()[0] in out


@pytest.mark.parametrize(("name", "why"), [
    ("absent", "ModuleNotFoundError: No module named 'envfarm_test_module_that_does_not_exist'"),
    ("needsdep", "No module named 'envfarm_test_dependency_not_installed'"),
    ("noapp", "envfarm_test_no_app has no typer app named `app`"),
])
def test_a_broken_mount_is_one_clear_line_when_used(broken_mounts: None, capsys: pytest.CaptureFixture[str], name: str, why: str) -> None:
    code, out, err = run_main(capsys, name, "anything", "--flag")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"envfarm: error: `envfarm {name}` is unavailable") and why in lines[0] and "(fix: " in lines[0]


def test_a_broken_mount_leaves_help_and_the_other_commands_working(broken_mounts: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    flat = " ".join(out.replace("│", " ").split())
    for name in ("doctor", "gc", "exec", "images", "mine", "train", "verify"):
        assert f" {name} " in flat
    assert "`envfarm absent` is unavailable" in flat and "`envfarm noapp` is unavailable" in flat
    code, out, err = run_main(capsys, "verify", "--help")
    assert code == 0 and "web" in out, err


def test_load_mount_reports_a_missing_app_as_envfarm_error(broken_mounts: None) -> None:
    with pytest.raises(EnvfarmError, match="define `app = typer.Typer"):
        cli.load_mount("noapp", cli.MOUNTS["noapp"])


def test_a_usage_error_is_the_usage_message_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "no-such-command")
    assert code == 2 and "No such command 'no-such-command'" in err and "Traceback" not in err

