"""Rust environments: Debian's rustc and cargo, crates from `vendor/` or a pre-filled cargo home.

Toolchain: the Debian base whose rustc is new enough for what the repository declares (`rust-version`,
the newest `edition`, the `Cargo.lock` format), the oldest such first; bookworm ships 1.63, trixie
1.85. A `rust-toolchain` file pins a toolchain rustup would download: it is ignored (no rustup here),
and a toolchain too old for the code shows up as the class `toolchain_too_old`.

Crates, in the order a repository offers them:
1. none: a crate without dependencies builds offline as it is;
2. vendored: a `vendor/` folder of crates (`cargo vendor`), used through the repository's own
   `.cargo/config.toml` source replacement or, where it has none, one the env layer writes into
   `CARGO_HOME` (never into the repository);
3. a pre-filled cargo home (`ENVFARM_CARGO_HOME=<dir>`, a `CARGO_HOME` whose `registry/` was filled by
   `cargo fetch` on a machine with internet): copied into the tooling layer, used offline;
4. the registry itself when the build has network and `BuildOptions.offline` is off (users with internet).
crates.io is not reachable from our machines, so here 1-3 are what works; a repository that needs 4
fails with the class `dependency_unreachable`.

The env build compiles every test target (`cargo test --no-run`) into `CARGO_TARGET_DIR=/opt/target`,
outside the repository and owned by the agent's uid, so runs only recompile what a patch changes.
Tests always run with `CARGO_NET_OFFLINE=true` (sandboxes have no network anyway).

Which tests a task runs (`test_targets`): `--test <name>` for each `tests/<name>.rs` (or
`tests/<name>/main.rs`) the test patch keeps, `--lib` / `--bins` for source files that are test-only
changes (see `envfarm.tasks.rust_split`); nothing selectable (fixtures only) means the whole suite.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shlex
import tomllib

from envfarm.config import base_image_for
from envfarm.images.recipe import ImageRecipe
from envfarm.tasks.envsetup.base import BuildOptions, Strategy
from envfarm.tasks.envsetup.depcache import cache_tar, debian_tooling
from envfarm.tasks.envsetup.failures import COLLECT_MARKER
from envfarm.tasks.mirror import Mirror

# The rustc each Debian base ships (checked in the images: `rustc --version`).
SUITE_RUST = {"bookworm": "1.63", "trixie": "1.85"}
CARGO_HOME = "/opt/cargo"
TARGET_DIR = "/opt/target"
CARGO_HOME_TAR = "/tmp/cargo-home.tar"
TEST_CMD = "cargo test --no-fail-fast"
LOG_PARSER = "cargo"
REASON_MARKER = "ENVFARM_REASON="
# The first rustc of each edition, and of each Cargo.lock format (`version = N` at the top of the lock).
EDITION_RUSTC = {"2015": (1, 0), "2018": (1, 31), "2021": (1, 56), "2024": (1, 85)}
LOCK_RUSTC = {3: (1, 53), 4: (1, 78)}
_DEPENDENCIES = ("dependencies", "dev-dependencies", "build-dependencies")
_TOO_OLD = (r"feature `edition20[0-9][0-9]` is required|requires rustc [0-9.]+ or newer|lock file version [0-9]+ requires|"
            r"is not supported by this version of Cargo|this version of Cargo is older than|unknown edition|"
            r"cannot be built because it requires rustc|is only supported on the nightly|use of unstable library feature|"
            r"error\[E0658\]")  # POSIX ERE for grep -E: no \d
_UNREACHABLE = (r"no matching package named|failed to get `[^`]+` as a dependency|failed to load source for dependency|"
                r"attempting to make an HTTP request, but --offline|Unable to update registry|failed to download|"
                r"failed to select a version for the requirement|Couldn't resolve host|no matching package found")


def _version(text: str) -> tuple[int, int] | None:
    match = re.match(r"^\s*(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _toml(mirror: Mirror, commit: str, path: str) -> dict:
    data = mirror.read(commit, path)
    try:
        return tomllib.loads(data.decode("utf-8", errors="replace")) if data else {}
    except tomllib.TOMLDecodeError:
        return {}


def manifests(mirror: Mirror, commit: str, names: list[str]) -> dict[str, dict]:
    """Every Cargo.toml outside vendor/ and target/, parsed (unreadable ones are empty)."""
    found = [n for n in names if posixpath.basename(n) == "Cargo.toml" and not n.startswith(("vendor/", "target/"))]
    return {n: _toml(mirror, commit, n) for n in found[:200]}


def needed_rustc(docs: dict[str, dict], lock: bytes | None) -> tuple[int, int] | None:
    """The oldest rustc that can build what the manifests and lock file declare (None: anything)."""
    need: list[tuple[int, int]] = []
    for doc in docs.values():
        for table in (doc.get("package", {}), doc.get("workspace", {}).get("package", {})):
            if not isinstance(table, dict):
                continue
            declared = _version(str(table.get("rust-version", "")))
            if declared:
                need.append(declared)
            edition = table.get("edition")
            if isinstance(edition, str) and edition in EDITION_RUSTC:
                need.append(EDITION_RUSTC[edition])
    if lock:
        match = re.search(rb"^version\s*=\s*(\d+)", lock, re.M)
        if match and int(match.group(1)) in LOCK_RUSTC:
            need.append(LOCK_RUSTC[int(match.group(1))])
    return max(need) if need else None


def has_dependencies(docs: dict[str, dict]) -> bool:
    """Whether any manifest names a dependency that is not a path inside the repository."""
    for doc in docs.values():
        tables = [doc, doc.get("workspace", {})] + [t for t in doc.get("target", {}).values() if isinstance(t, dict)]
        for table in tables:
            for key in (*_DEPENDENCIES, "dependencies"):
                deps = table.get(key, {}) if isinstance(table, dict) else {}
                for spec in (deps.values() if isinstance(deps, dict) else []):
                    if not (isinstance(spec, dict) and ("path" in spec or spec.get("workspace") is True)):
                        return True
    return False


def choose_suites(wanted: tuple[int, int] | None, suites: dict[str, str] = SUITE_RUST) -> list[str]:
    """Suites whose rustc satisfies `wanted`, oldest first; the newest as a last resort."""
    ordered = sorted(suites, key=lambda s: _version(suites[s]) or (0, 0))
    fitting = [s for s in ordered if wanted is None or (_version(suites[s]) or (0, 0)) >= wanted]
    return fitting or ordered[-1:]


def cargo_home_tar() -> bytes | None:
    """The pre-filled cargo home named by ENVFARM_CARGO_HOME (its registry/ and git/ only), as a tar."""
    return cache_tar("ENVFARM_CARGO_HOME", "registry", "a cargo home",
                     "point it at a CARGO_HOME filled by `cargo fetch` (usually ~/.cargo), or unset it", ("registry", "git"))


VENDOR_CONFIG = (
    '[source.crates-io]\nreplace-with = "envfarm-vendored"\n'
    '[source.envfarm-vendored]\ndirectory = "/testbed/vendor"\n'
)


class RustRecipes:
    language = "rust"

    def version(self, mirror: Mirror, commit: str) -> str:
        """Manifests, the lock file and the vendored crates decide the env."""
        names = mirror.ls(commit)
        wanted = [n for n in names if posixpath.basename(n) in ("Cargo.toml", "Cargo.lock", "rust-toolchain", "rust-toolchain.toml")
                  and not n.startswith(("vendor/", "target/"))]
        vendored = sorted(n for n in names if n.startswith("vendor/") and n.endswith("/Cargo.toml"))
        digest = hashlib.sha256("\0".join(f"{n}\0{(mirror.read(commit, n) or b'').hex()}" for n in sorted(wanted) + vendored).encode()).hexdigest()[:8]
        root = _toml(mirror, commit, "Cargo.toml").get("package", {})
        declared = _version(str(root.get("version", ""))) if isinstance(root, dict) else None
        return f"{declared[0]}.{declared[1]}+{digest}" if declared else f"0+{digest}"

    def strategies(self, mirror: Mirror, commit: str, date: str | None, options: BuildOptions) -> list[Strategy]:
        names = mirror.ls(commit)
        docs = manifests(mirror, commit, names)
        lock = mirror.read(commit, "Cargo.lock")
        wanted = needed_rustc(docs, lock)
        repo_config = any(n in names for n in (".cargo/config.toml", ".cargo/config"))
        vendored = any(n.startswith("vendor/") and n.endswith("/.cargo-checksum.json") for n in names)
        if vendored:
            deps = "vendored"
        elif not has_dependencies(docs):
            deps = "no-dependencies"
        elif os.environ.get("ENVFARM_CARGO_HOME"):
            deps = "cargo-home"
        else:
            deps = "registry"
        install = ["cargo --version"]
        if vendored and not repo_config:
            install.append(f"printf '%s' {shlex.quote(VENDOR_CONFIG)} > {CARGO_HOME}/config.toml")
        offline = "true" if options.offline or deps != "registry" else "false"
        install.append(
            f"CARGO_NET_OFFLINE={offline} cargo fetch > /tmp/fetch.log 2>&1 || {{ tail -n 20 /tmp/fetch.log | sed 's/^/cargo fetch failed: /';"
            f" if grep -qE {shlex.quote(_TOO_OLD)} /tmp/fetch.log; then echo '{REASON_MARKER}toolchain_too_old';"
            f" else echo '{REASON_MARKER}dependency_unreachable'; fi; exit 1; }}")
        env = (("CARGO_HOME", CARGO_HOME), ("CARGO_TARGET_DIR", TARGET_DIR), ("CARGO_NET_OFFLINE", "true"),
               ("CARGO_TERM_COLOR", "never"), ("CARGO_INCREMENTAL", "0"), ("RUST_BACKTRACE", "0"))
        strategies = []
        for suite in choose_suites(wanted):
            rustc = SUITE_RUST[suite]
            strategies.append(Strategy(
                name=f"{deps}@rust{rustc}", python=f"rust{rustc}", install=tuple(install), test_cmd=TEST_CMD,
                log_parser=LOG_PARSER, base_image=base_image_for(suite), env=env,
                notes=(f"needs rustc {wanted[0]}.{wanted[1]}" if wanted else "declares no minimum rustc",),
            ))
        return strategies

    def tooling(self, base_image: str) -> ImageRecipe:
        """Debian's rustc and cargo on the base, plus the pre-filled cargo home when ENVFARM_CARGO_HOME names one."""
        return debian_tooling("rust-tooling", base_image, "rustc cargo gcc libc6-dev", "rustc --version && cargo --version",
                              cargo_home_tar(), CARGO_HOME_TAR, CARGO_HOME)

    def env_steps(self, strategy: Strategy, collect_paths: list[str], options: BuildOptions) -> list[str]:
        compile_tests = (
            f"cd /testbed && cargo test --no-run > /tmp/collect.log 2>&1; rc=$?;"
            " if [ $rc -ne 0 ]; then grep -E '^(error|warning: unused manifest)' /tmp/collect.log | head -n 20; tail -n 30 /tmp/collect.log | sed 's/^/cargo test failed: /';"
            f" if grep -qE {shlex.quote(_TOO_OLD)} /tmp/collect.log; then echo '{REASON_MARKER}toolchain_too_old';"
            f" elif grep -qE {shlex.quote(_UNREACHABLE)} /tmp/collect.log; then echo '{REASON_MARKER}dependency_unreachable';"
            f" else echo '{REASON_MARKER}build_error'; fi; echo '{COLLECT_MARKER} (exit '$rc')'; exit 1; fi; rm -f /tmp/collect.log"
        )
        return [
            f"mkdir -p {CARGO_HOME} {TARGET_DIR} && cd /testbed && {' && '.join(strategy.install)}",
            compile_tests,
            f"chown -R 1000:1000 /testbed {CARGO_HOME} {TARGET_DIR}",
        ]


# -- which test targets a task runs ----------------------------------------------------------------

def test_targets(paths: list[str]) -> list[str]:
    """`cargo test` target flags for the test files a test patch keeps; [] means the whole suite."""
    flags: list[tuple[str, ...]] = []
    for path in paths:
        if not path.endswith(".rs"):
            continue
        parts = path.split("/")
        if "tests" in parts:
            rest = parts[parts.index("tests") + 1:]
            if len(rest) == 1:
                flags.append(("--test", rest[0][:-3]))
            elif len(rest) == 2 and rest[1] == "main.rs":
                flags.append(("--test", rest[0]))
            continue  # a helper module or fixture under tests/: compiled into the tests that use it
        if "src" in parts and parts[-1] != "build.rs" and "benches" not in parts and "examples" not in parts:
            flags.append(("--bins",) if parts[-1] == "main.rs" or "bin" in parts else ("--lib",))
    return [flag for group in dict.fromkeys(flags) for flag in group]


def register_rust() -> None:
    from envfarm.tasks.envsetup import register
    from envfarm.tasks.patchsplit import register_block_splitter, register_target_rule
    from envfarm.tasks.rust_split import split_rust_block

    register(RustRecipes())
    register_target_rule("rust", test_targets)
    register_block_splitter("rust", split_rust_block)


register_rust()
