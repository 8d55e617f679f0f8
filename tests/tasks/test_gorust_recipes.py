"""Go and Rust recipes without an engine: toolchain choice, dependency modes, the steps they write, the
failure classes their build steps name, and what of an agent's Go/Rust diff the verifier refuses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from envfarm.errors import EnvfarmError
from envfarm.tasks.envsetup import recipes_for
from envfarm.tasks.envsetup.base import BuildOptions
from envfarm.tasks.envsetup.failures import classify_build_failure
from envfarm.tasks.envsetup.go import choose_suites as go_suites, go_version, modcache_tar
from envfarm.tasks.envsetup.rust import cargo_home_tar, choose_suites as rust_suites, has_dependencies, needed_rustc
from envfarm.tasks.mirror import Mirror
from envfarm.verifiers.integrity import filter_patch

from .fixtures import git, write


def _mirror(tmp_path: Path, files: dict[str, str]) -> tuple[Mirror, str]:
    work = tmp_path / "w"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    write(work, files)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "init")
    return Mirror(work), git(work, "rev-parse", "HEAD")


def test_go_toolchain_choice_follows_the_go_directive():
    assert go_version("module x\n\ngo 1.21\n") == (1, 21) and go_version("module x\n") is None
    assert go_suites((1, 12)) == ["bookworm", "trixie"]  # oldest that fits first
    assert go_suites((1, 22)) == ["trixie"]
    assert go_suites((1, 30)) == ["trixie"]  # none fits: the newest, which fails as toolchain_too_old


@pytest.mark.parametrize(
    ("files", "mode", "goflags"),
    [
        ({"go.mod": "module x\n\ngo 1.19\n", "a.go": "package x\n"}, "stdlib-only", "-mod=mod"),
        ({"go.mod": "module x\n\ngo 1.19\n\nrequire example.com/y v1.0.0\n", "vendor/modules.txt": "# example.com/y v1.0.0\n", "a.go": "package x\n"},
         "vendored", "-mod=vendor"),
        ({"go.mod": "module x\n\ngo 1.21\n\nrequire (\n\texample.com/y v1.0.0\n)\n", "a.go": "package x\n"}, "proxy", "-mod=mod"),
    ],
)
def test_go_dependency_modes(tmp_path, files, mode, goflags):
    mirror, head = _mirror(tmp_path, files)
    strategies = recipes_for("go").strategies(mirror, head, None, BuildOptions(offline=True))
    assert strategies[0].name.startswith(mode)
    env = dict(strategies[0].env)
    assert env["GOFLAGS"] == goflags and env["GOTOOLCHAIN"] == "local" and env["GOPROXY"] == "off" and env["CGO_ENABLED"] == "0"
    assert strategies[0].log_parser == "gotest" and strategies[0].test_cmd.startswith("go test -json")
    if mode == "proxy":  # offline: the download is tried with GOPROXY=off and fails with a named class
        assert "GOPROXY=off" in " ".join(strategies[0].install) and "dependency_unreachable" in " ".join(strategies[0].install)


def test_go_cgo_files_keep_cgo_on(tmp_path):
    mirror, head = _mirror(tmp_path, {"go.mod": "module x\n\ngo 1.19\n", "a.go": 'package x\n\n// #include <stdio.h>\nimport "C"\n'})
    assert dict(recipes_for("go").strategies(mirror, head, None, BuildOptions())[0].env)["CGO_ENABLED"] == "1"


def test_rust_toolchain_from_edition_rust_version_and_lock():
    assert needed_rustc({"Cargo.toml": {"package": {"edition": "2018"}}}, None) == (1, 31)
    assert needed_rustc({"Cargo.toml": {"package": {"edition": "2021", "rust-version": "1.70"}}}, None) == (1, 70)
    assert needed_rustc({"Cargo.toml": {"workspace": {"package": {"edition": "2024"}}}}, b"version = 3\n") == (1, 85)
    assert needed_rustc({"Cargo.toml": {"package": {}}}, b"# lock\nversion = 4\n") == (1, 78)
    assert rust_suites((1, 31)) == ["bookworm", "trixie"] and rust_suites((1, 70)) == ["trixie"]


def test_rust_dependency_detection():
    assert not has_dependencies({"Cargo.toml": {"package": {}, "dependencies": {"sub": {"path": "sub"}}}})
    assert has_dependencies({"Cargo.toml": {"dev-dependencies": {"quickcheck": "1"}}})
    assert has_dependencies({"Cargo.toml": {"target": {"cfg(windows)": {"dependencies": {"winapi": "0.3"}}}}})
    assert has_dependencies({"Cargo.toml": {"workspace": {"dependencies": {"serde": "1"}}}})


def test_rust_vendored_sources_get_a_source_replacement_outside_the_repository(tmp_path):
    mirror, head = _mirror(tmp_path, {"Cargo.toml": '[package]\nname = "x"\nversion = "0.1.0"\n\n[dependencies]\ny = "1"\n',
                                      "src/lib.rs": "", "vendor/y/Cargo.toml": "", "vendor/y/.cargo-checksum.json": "{}"})
    strategy = recipes_for("rust").strategies(mirror, head, None, BuildOptions(offline=True))[0]
    assert strategy.name.startswith("vendored@")
    steps = " ".join(strategy.install)
    assert "/opt/cargo/config.toml" in steps and 'directory = "/testbed/vendor"' in steps
    assert dict(strategy.env)["CARGO_TARGET_DIR"] == "/opt/target"


def test_rust_steps_are_valid_shell(tmp_path):
    """The build steps quote their grep patterns (a backquote in a pattern once made sh fail)."""
    mirror, head = _mirror(tmp_path, {"Cargo.toml": '[package]\nname = "x"\nversion = "0.1.0"\n', "src/lib.rs": ""})
    recipes = recipes_for("rust")
    strategy = recipes.strategies(mirror, head, None, BuildOptions())[0]
    for step in recipes.env_steps(strategy, [], BuildOptions()):
        assert subprocess.run(["sh", "-n", "-c", step], capture_output=True).returncode == 0, step


def test_go_steps_are_valid_shell(tmp_path):
    mirror, head = _mirror(tmp_path, {"go.mod": "module x\n", "a.go": "package x\n"})
    go = recipes_for("go")
    for step in go.env_steps(go.strategies(mirror, head, None, BuildOptions())[0], [], BuildOptions()):
        assert subprocess.run(["sh", "-n", "-c", step], capture_output=True).returncode == 0, step


def test_a_recipe_names_its_failure_class_in_the_build_log():
    log = "error: no matching package named `serde` found\nENVFARM_REASON=dependency_unreachable\nENVFARM_COLLECT_FAILED (exit 101)\n"
    assert classify_build_failure(log) == "dependency_unreachable"
    assert classify_build_failure("RUN echo 'ENVFARM_REASON=toolchain_too_old'\n") != "toolchain_too_old"  # the step's own text is not a verdict


def test_prefilled_caches_are_checked_and_packed_stably(tmp_path, monkeypatch):
    monkeypatch.delenv("ENVFARM_GO_MODCACHE", raising=False)
    assert modcache_tar() is None
    monkeypatch.setenv("ENVFARM_GO_MODCACHE", str(tmp_path))
    with pytest.raises(EnvfarmError, match="ENVFARM_GO_MODCACHE"):
        modcache_tar()
    (tmp_path / "cache" / "download" / "example.com").mkdir(parents=True)
    (tmp_path / "cache" / "download" / "example.com" / "list").write_text("v1.0.0\n")
    assert modcache_tar() == modcache_tar() and len(modcache_tar()) > 0
    home = tmp_path / "cargo"
    (home / "registry" / "cache").mkdir(parents=True)
    (home / "registry" / "cache" / "x.crate").write_bytes(b"crate")
    (home / "bin").mkdir()
    (home / "bin" / "tool").write_bytes(b"not packed")
    monkeypatch.setenv("ENVFARM_CARGO_HOME", str(home))
    import io
    import tarfile

    names = tarfile.open(fileobj=io.BytesIO(cargo_home_tar())).getnames()
    assert "registry/cache/x.crate" in names and not any(n.startswith("bin") for n in names)


def _new_file(path: str, body: str = "x") -> str:
    return f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+{body}\n"


def test_agent_go_test_files_build_scripts_and_cargo_config_never_apply():
    patch = (_new_file("calc/cheat_test.go", "package calc") + _new_file("build.rs", "fn main() {}")
             + _new_file(".cargo/config.toml", "[target.x86_64-unknown-linux-gnu]") + _new_file("src/fix.rs", "pub fn f() {}"))
    filtered = filter_patch(patch)
    dropped = {d.path: (d.category, d.tampering) for d in filtered.dropped}
    assert dropped["calc/cheat_test.go"] == ("tests", False)
    assert dropped["build.rs"][1] and dropped[".cargo/config.toml"] == ("cargo configuration", True)
    assert filtered.kept == ["src/fix.rs"]
