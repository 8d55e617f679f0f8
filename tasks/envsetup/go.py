"""Go environments: Debian's Go toolchain, modules from `vendor/`, a proxy, or a pre-filled cache.

Toolchain: the Debian base whose `golang-go` is at least the `go` directive of `go.mod` (bookworm
ships 1.19, trixie 1.24), the oldest such first (closest to the project's era), the newest as a last
resort. `GOTOOLCHAIN=local`: Go 1.21+ would otherwise try to download the toolchain `go.mod` asks for.

Dependencies, in the order a repository offers them:
1. `vendor/modules.txt` in the repository: `GOFLAGS=-mod=vendor`, nothing is downloaded;
2. no `require` in `go.mod`: standard library only, nothing to download;
3. a pre-filled module cache (`ENVFARM_GO_MODCACHE=<dir>`, a `GOMODCACHE` filled by `go mod download`
   on a machine with internet): copied into the env layer, `GOPROXY=off`, `GOFLAGS=-mod=mod`;
4. a module proxy (`ENVFARM_GOPROXY`, default Go's own): `go mod download` during the env build.
The Go module proxy is not reachable from our machines, so here 1-3 are what works; a repository
that needs 4 fails with the class `dependency_unreachable` and the proxy's error in its excerpt.

Every env build compiles every package's tests (`go test -run '^$' ./...`), which proves they build
at the environment commit and leaves the build cache warm (owned by the agent's uid) for the runs.
`CGO_ENABLED=0` unless the repository has cgo files (`import "C"`), which then get Debian's gcc.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess

from envfarm.config import base_image_for
from envfarm.images.recipe import ImageRecipe
from envfarm.tasks.envsetup.base import BuildOptions, Strategy
from envfarm.tasks.envsetup.depcache import cache_tar, debian_tooling
from envfarm.tasks.envsetup.failures import COLLECT_MARKER
from envfarm.tasks.mirror import Mirror

# The golang-go each Debian base ships (checked in the images: `go version`).
SUITE_GO = {"bookworm": "1.19", "trixie": "1.24"}
GOPATH = "/opt/go"
GOCACHE = "/opt/go-cache"
MODCACHE_TAR = "/tmp/gomodcache.tar"
# -vet=off: `go test` runs some vet checks as part of the build, and a newer Go's checks (1.24's printf
# check on non-constant format strings) fail the build of code that passed the vet of its own era.
TEST_CMD = "go test -json -count=1 -vet=off"
LOG_PARSER = "gotest"
DEFAULT_PROXY = "https://proxy.golang.org,direct"
REASON_MARKER = "ENVFARM_REASON="  # failures.py reads `ENVFARM_REASON=<class>` lines from a build log
_GO_DIRECTIVE = re.compile(r"^go\s+(\d+)\.(\d+)", re.M)
_REQUIRE = re.compile(r"^require\s*(\(|\S)", re.M)


def go_version(text: str) -> tuple[int, int] | None:
    match = _GO_DIRECTIVE.search(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def choose_suites(wanted: tuple[int, int] | None, suites: dict[str, str] = SUITE_GO) -> list[str]:
    """Suites to try: those whose Go satisfies `wanted`, oldest first, then the newest as a last resort."""
    ordered = sorted(suites, key=lambda s: _minor(suites[s]))
    fitting = [s for s in ordered if wanted is None or _minor(suites[s]) >= wanted]
    return fitting or ordered[-1:]


def modcache_tar() -> bytes | None:
    """The pre-filled module cache named by ENVFARM_GO_MODCACHE, as a tar (None when unset)."""
    return cache_tar("ENVFARM_GO_MODCACHE", "cache/download", "a Go module cache",
                     "point it at a GOMODCACHE filled by `go mod download` (go env GOMODCACHE), or unset it")


def uses_cgo(mirror: Mirror, commit: str) -> bool:
    """Whether any non-vendored Go file imports "C" (then the env keeps cgo on, with Debian's gcc)."""
    proc = subprocess.run(["git", "-C", str(mirror.path), "grep", "-q", "-E", r'^import[[:space:]]+"C"|^[[:space:]]+"C"$', commit,
                           "--", "*.go", ":!vendor/"], capture_output=True)
    return proc.returncode == 0


class GoRecipes:
    language = "go"

    def _gomod(self, mirror: Mirror, commit: str) -> str:
        data = mirror.read(commit, "go.mod")
        return data.decode("utf-8", errors="replace") if data else ""

    def version(self, mirror: Mirror, commit: str) -> str:
        """go.mod, go.sum and vendor/modules.txt decide the env: commits that agree on them share one."""
        parts = [mirror.read(commit, name) or b"" for name in ("go.mod", "go.sum", "vendor/modules.txt")]
        wanted = go_version(parts[0].decode("utf-8", errors="replace"))
        digest = hashlib.sha256(b"\0".join(parts)).hexdigest()[:8]
        return f"go{wanted[0]}.{wanted[1]}+{digest}" if wanted else f"go+{digest}"

    def strategies(self, mirror: Mirror, commit: str, date: str | None, options: BuildOptions) -> list[Strategy]:
        gomod = self._gomod(mirror, commit)
        names = mirror.ls(commit)
        wanted = go_version(gomod)
        vendored = "vendor/modules.txt" in names
        requires = bool(_REQUIRE.search(gomod))
        cgo = uses_cgo(mirror, commit)
        cache = not vendored and requires and bool(os.environ.get("ENVFARM_GO_MODCACHE"))
        env: list[tuple[str, str]] = [("GOTOOLCHAIN", "local"), ("GOPATH", GOPATH), ("GOCACHE", GOCACHE),
                                      ("GOFLAGS", "-mod=vendor" if vendored else "-mod=mod"), ("CGO_ENABLED", "1" if cgo else "0"),
                                      ("GONOSUMDB", "*"), ("GOPROXY", "off")]
        if vendored:
            deps = "vendored"
        elif not requires:
            deps = "stdlib-only"
        elif cache:
            deps = "module-cache"
        else:
            deps = "proxy"
        install: list[str] = ["go version"]
        if deps == "proxy":
            proxy = os.environ.get("ENVFARM_GOPROXY", DEFAULT_PROXY) if not options.offline else "off"
            install.append(
                f"GOPROXY={shlex.quote(proxy)} GOFLAGS=-mod=mod go mod download > /tmp/gomod.log 2>&1"
                f" || {{ tail -n 20 /tmp/gomod.log; echo '{REASON_MARKER}dependency_unreachable'; exit 1; }}")
        strategies = []
        for suite in choose_suites(wanted):
            base = base_image_for(suite)
            strategies.append(Strategy(
                name=f"{deps}@go{SUITE_GO[suite]}", python=f"go{SUITE_GO[suite]}", install=tuple(install), test_cmd=TEST_CMD,
                log_parser=LOG_PARSER, base_image=base, env=tuple(env),
                notes=(f"go.mod asks for go {wanted[0]}.{wanted[1]}" if wanted else "go.mod names no go version",),
            ))
        return strategies

    def tooling(self, base_image: str) -> ImageRecipe:
        """Debian's Go on the base, plus the pre-filled module cache when ENVFARM_GO_MODCACHE names one."""
        return debian_tooling("go-tooling", base_image, "golang-go gcc libc6-dev", "go version", modcache_tar(), MODCACHE_TAR, f"{GOPATH}/pkg/mod")

    def env_steps(self, strategy: Strategy, collect_paths: list[str], options: BuildOptions) -> list[str]:
        compile_tests = (
            f"cd /testbed && go test -count=1 -vet=off -run '^$' ./... > /tmp/collect.log 2>&1; rc=$?;"
            " if [ $rc -ne 0 ]; then tail -n 40 /tmp/collect.log | sed 's/^/go test failed: /';"
            " if grep -q 'requires go >= \\|go.mod requires go\\|newer Go version\\|requires go1' /tmp/collect.log;"
            f" then echo '{REASON_MARKER}toolchain_too_old'; fi;"
            " if grep -q 'proxy.golang.org\\|GOPROXY=off\\|cannot find module providing\\|missing go.sum entry\\|inconsistent vendoring' /tmp/collect.log;"
            f" then echo '{REASON_MARKER}dependency_unreachable'; fi; echo '{COLLECT_MARKER} (exit '$rc')'; exit 1; fi; rm -f /tmp/collect.log"
        )
        return [
            f"mkdir -p {GOPATH} {GOCACHE} && cd /testbed && {' && '.join(strategy.install)}",
            compile_tests,
            f"chown -R 1000:1000 /testbed {GOPATH} {GOCACHE}",
        ]


def register_go() -> None:
    from envfarm.tasks.envsetup import register

    register(GoRecipes())


register_go()
