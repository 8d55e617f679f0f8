"""JavaScript / TypeScript environments: Node from a Debian base, the lockfile's package manager, the
repository's own test runner with machine-readable results.

Node comes from the Debian base whose `nodejs` fits the repository (no Node download is reachable on
our machines, and Debian's is the one a user can rebuild anywhere): bullseye ships Node 12.22, bookworm
18.20, trixie 20.19 (`SUITE_NODE`, checked by the tooling layer, which prints `node --version`).
Evidence, strongest first: `engines.node` in package.json (a range every candidate must satisfy),
`.nvmrc` / `.node-version`, CI `node-version:` values; the base whose major is named, else the newest
allowed, is tried first, the next one after it.

The package manager is the lockfile's: `package-lock.json` / `npm-shrinkwrap.json` -> `npm ci`,
`yarn.lock` -> yarn (1.x for a v1 lockfile, 2+ for a `__metadata:` one), `pnpm-lock.yaml` -> pnpm (its
major from `lockfileVersion`), with `packageManager` in package.json winning (corepack's own field;
trixie's `node-corepack` activates it, elsewhere `npm install -g` fetches that version). No lockfile:
`npm install --before=<task date>`, so dependencies resolve as they were when the issue was filed.
Installs keep `node_modules` in the env layer: it is git-ignored through `.git/info/exclude`, so the
instance layer's `git clean` keeps it and the agent's `git status` never shows it.

The test runner is read from package.json (`scripts.test`, then devDependencies): Jest and Vitest write
their JSON report, mocha its xunit (JUnit) report, Node's runner TAP through envfarm's reporter (file
paths in every id), ava TAP on the console. A repository with none of them is refused with a recorded
reason (`runner_unsupported`), as is a Bun lockfile (`package_manager_unsupported`).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nodesemver

from envfarm.config import base_image_for
from envfarm.images.recipe import ImageRecipe
from envfarm.tasks.envsetup import register
from envfarm.tasks.envsetup.base import BuildOptions, Strategy
from envfarm.tasks.envsetup import failures
from envfarm.tasks.envsetup.failures import COLLECT_MARKER
from envfarm.tasks.mirror import Mirror

# Debian's nodejs per reachable suite (apt-cache policy, 2026-12): what a base can run without a download.
SUITE_NODE: dict[str, str] = {"bullseye": "12.22.12", "bookworm": "18.20.4", "trixie": "20.19.2"}
# Debian packages of the tooling layer; trixie also packages corepack.
TOOLING_PACKAGES: dict[str, tuple[str, ...]] = {
    "bullseye": ("nodejs", "npm"), "bookworm": ("nodejs", "npm"), "trixie": ("nodejs", "npm", "node-corepack")}
REPORTER_PATH = "/opt/envfarm/node-tap-reporter.mjs"  # envfarm's reporter for Node's own runner
REPORTER_SOURCE = Path(__file__).with_name("node") / "tap-reporter.mjs"
LOCK_MARKER = "ENVFARM_LOCKFILE_INSTALL_FAILED"
NODE_MARKER = "ENVFARM_NODE_UNAVAILABLE"
PM_MARKER = "ENVFARM_PACKAGE_MANAGER_UNAVAILABLE"
REFUSED_MARKER = "ENVFARM_REFUSED"
# Reason classes of a failed JS env build, read from the markers the steps print (most specific first);
# npm's own resolution errors say which kind of install failure it was.
SIGNATURES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("node_unavailable", re.compile(NODE_MARKER)),
    ("runner_unsupported", re.compile(rf"{REFUSED_MARKER} runner_unsupported")),
    ("package_manager_unsupported", re.compile(rf"{REFUSED_MARKER} package_manager_unsupported")),
    ("no_package_json", re.compile(rf"{REFUSED_MARKER} no_package_json")),
    ("package_manager_unavailable", re.compile(PM_MARKER)),
    ("no_versions_under_cap", re.compile(r"npm (ERR!|error) code ENOVERSIONS|No versions available for|No matching version found for \S+ with a date before", re.I)),
    ("no_matching_distribution", re.compile(r"npm (ERR!|error) code (ETARGET|E404)|No matching version found|is not in this registry|Couldn't find any versions for", re.I)),
    ("resolver_conflict", re.compile(r"npm (ERR!|error) code ERESOLVE|unable to resolve dependency tree", re.I)),
    ("lockfile_out_of_date", re.compile(r"npm (ERR!|error) `npm ci` can only install packages when|lockfile needs to be updated|ERR_PNPM_OUTDATED_LOCKFILE|"
                                        r"The lockfile would have been modified by this install", re.I)),
    ("build_error", re.compile(r"npm (ERR!|error) code ELIFECYCLE|gyp ERR!|command failed.*(install|postinstall)|ERR_PNPM_LIFECYCLE", re.I)),
    ("lockfile_install_failed", re.compile(LOCK_MARKER)),
)
DEP_FILES = ("package.json", "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "bun.lockb", "bun.lock",
             ".nvmrc", ".node-version", ".yarnrc.yml", ".npmrc", "pnpm-workspace.yaml")
RUNNERS = ("vitest", "jest", "mocha", "ava", "node-test")
# Options whose value is the next word, per runner (kept with their value when carried from scripts.test).
VALUE_OPTIONS = {
    "jest": {"-c", "--config", "--testEnvironment", "--env", "--maxWorkers", "-w", "--testTimeout", "--rootDir", "--roots", "--setupFiles",
             "--setupFilesAfterEach", "--testMatch", "--testPathIgnorePatterns", "--selectProjects", "--projects", "--timezone"},
    "vitest": {"-c", "--config", "--root", "-r", "--dir", "--environment", "--pool", "--project", "--mode", "--testTimeout"},
    "mocha": {"-r", "--require", "-t", "--timeout", "-u", "--ui", "--extension", "--file", "--config", "--ignore", "--exclude",
              "-s", "--slow", "-g", "--grep", "--spec", "--package", "--node-option", "-n", "--loader", "--import"},
    "ava": {"--config", "--match", "-m", "--timeout", "-T", "--concurrency", "-c"},
    "node-test": {"--require", "-r", "--import", "--loader", "--experimental-loader", "--test-name-pattern", "--test-concurrency", "--test-timeout"},
}
# Options envfarm sets itself, or that would stop the runner from reporting or exiting; the first set
# takes a value (dropped with it when it is the next word).
DROPPED_WITH_VALUE = {"--reporter", "-R", "--reporters", "--outputFile", "--reporter-options", "--reporter-option", "-O", "--test-reporter",
                      "--test-reporter-destination", "--coverageThreshold", "--coverageReporters", "--coverageDirectory", "--shard"}
DROPPED_OPTIONS = DROPPED_WITH_VALUE | {"--watch", "--watchAll", "-w", "--coverage", "--ci", "--json", "--outputFile", "--reporter", "--reporters", "--reporter-options",
                   "--reporter-option", "-R", "--tap", "--verbose", "--silent", "--colors", "--color", "--no-color", "--bail", "--run",
                   "--passWithNoTests", "--forbid-only", "--listTests", "--ui-mode", "--test-only", "--detectOpenHandles"}


@dataclass(frozen=True)
class NodeChoice:
    suite: str
    node: str  # Debian's version on that suite
    why: str

    @property
    def major(self) -> int:
        return int(self.node.split(".")[0])

    @property
    def base_image(self) -> str:
        return base_image_for(self.suite)


@dataclass(frozen=True)
class PackageManager:
    name: str  # npm | yarn | pnpm
    version: str  # "" = the one Debian ships (npm) / the tooling default
    lockfile: str  # "" when the repository has none
    berry: bool = False  # yarn 2+

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name


@dataclass(frozen=True)
class Runner:
    name: str  # one of RUNNERS
    env: tuple[str, ...]  # VAR=value words the script sets before the runner
    args: tuple[str, ...]  # the words after the runner in scripts.test (filtered by carried_args)
    script: str  # where it was read from
    builds: tuple[str, ...] = ()  # build steps the script runs before the tests (`npm run build`, `tsc`)


class UnsupportedRepository(Exception):
    """Not mined at all, with a reason class for the funnel (see JavaScriptRecipes.refusal)."""

    def __init__(self, reason_class: str, reason: str) -> None:
        self.reason_class, self.reason = reason_class, reason
        super().__init__(f"{reason_class}: {reason}")


def _text(mirror: Mirror, commit: str, path: str) -> str:
    data = mirror.read(commit, path)
    return data.decode("utf-8", errors="replace") if data else ""


def package_json(files: dict[str, str]) -> dict[str, Any]:
    try:
        data = json.loads(files.get("package.json") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def node_range(text: str) -> str | None:
    """An npm range (`>=14 <19`, `^18`, `14 || >=16`) in node-semver's loose form, or None if it is not one."""
    text = str(text).strip()
    return text if text and nodesemver.valid_range(text, True) is not None else None


def named_node_majors(files: dict[str, str]) -> list[int]:
    """Node majors the repository names: .nvmrc / .node-version, then CI `node-version` values."""
    majors: list[int] = []
    for name in (".nvmrc", ".node-version"):
        match = re.match(r"\s*v?(\d+)", files.get(name, ""))
        if match:
            majors.append(int(match.group(1)))
    for name, text in files.items():
        if not name.startswith(".github/workflows/"):
            continue
        for block in re.findall(r"node(?:-version|_version|js)?\s*:\s*(\[[^\]]*\]|[^\n#]+)", text):
            majors += [int(m) for m in re.findall(r"(?<![\d.])(\d{1,2})(?:\.x|\.\d+)*(?![\d.])", block) if 4 <= int(m) <= 30]
    return list(dict.fromkeys(majors))


def choose_node(files: dict[str, str]) -> list[NodeChoice]:
    """Bases to try, best first (at most two): see the module docstring."""
    engines = package_json(files).get("engines") or {}
    spec = node_range(engines.get("node", "")) if isinstance(engines, dict) else None
    named = named_node_majors(files)
    suites = sorted(SUITE_NODE, key=lambda s: int(SUITE_NODE[s].split(".")[0]))
    allowed = [s for s in suites if spec is None or nodesemver.satisfies(SUITE_NODE[s], spec, loose=True)]
    why_engines = f"engines.node {engines.get('node')!r}" if spec is not None else "no engines.node"
    if not allowed:  # a range no Debian Node meets (>=22, say): the newest is the nearest miss
        newest = suites[-1]
        return [NodeChoice(newest, SUITE_NODE[newest], f"{why_engines} is met by no Debian base; Node {SUITE_NODE[newest]} is the nearest")]
    majors = {s: int(SUITE_NODE[s].split(".")[0]) for s in allowed}
    if named:
        target = max(named)
        order = sorted(allowed, key=lambda s: (majors[s] not in named, abs(majors[s] - target), -majors[s]))
        why = f"{why_engines}; the repository names Node {', '.join(map(str, named))}"
    else:
        order = sorted(allowed, key=lambda s: -majors[s])
        why = f"{why_engines}; no Node version named: the newest allowed"
    return [NodeChoice(s, SUITE_NODE[s], why) for s in order[:2]]


def detect_package_manager(files: dict[str, str]) -> PackageManager:
    manifest = package_json(files)
    declared = str(manifest.get("packageManager") or "")
    match = re.match(r"^(npm|yarn|pnpm)@(\d+[\w.+-]*?)(?:\+.*)?$", declared)
    if "bun.lockb" in files or "bun.lock" in files:
        raise UnsupportedRepository("package_manager_unsupported", "the repository locks its dependencies with Bun (bun.lockb/bun.lock), which no Debian base ships")
    if match and match.group(1) != "npm":
        pm = match.group(1)
        lock = {"yarn": "yarn.lock", "pnpm": "pnpm-lock.yaml"}[pm]
        berry = pm == "yarn" and not match.group(2).startswith("1.")
        return PackageManager(pm, match.group(2), lock if lock in files else "", berry)
    if "pnpm-lock.yaml" in files:
        version = re.search(r"^lockfileVersion:\s*'?(\d+)", files["pnpm-lock.yaml"], re.M)
        major = int(version.group(1)) if version else 9
        pnpm = {5: "7", 6: "8"}.get(major, "9")
        return PackageManager("pnpm", pnpm, "pnpm-lock.yaml")
    if "yarn.lock" in files:
        berry = "__metadata:" in files["yarn.lock"]
        return PackageManager("yarn", "4" if berry else "1.22.22", "yarn.lock", berry)
    for lock in ("npm-shrinkwrap.json", "package-lock.json"):
        if lock in files:
            return PackageManager("npm", "", lock)
    return PackageManager("npm", "", "")


_RUNNER_WORD = re.compile(r"^(?:.*/)?(jest|vitest|mocha|_mocha|ava)(?:\.c?js)?$")
_BUILD_STEP = re.compile(r"^(?:(?:npm|pnpm|yarn)(?: run)? (?:build|compile|prepare)[\w:-]*|tsc\b.*)$")


def _words(part: str) -> list[str]:
    try:
        return shlex.split(part)
    except ValueError:
        return part.split()


def _script_runner(script: str, scripts: dict[str, Any], depth: int = 0) -> Runner | None:
    """The runner a script line calls (following `npm run X` into other scripts), with the env words it
    sets, the options it passes, and the build steps that run before it (their output is what tests import).
    Of several runner calls the first that sets no environment wins (dayjs runs its time-zone passes under
    `TZ=...` first, then the plain suite; axios its unit suite before the module checks), else the first."""
    builds: list[str] = []
    found_all: list[Runner] = []
    for part in re.split(r"\s*(?:&&|;)\s*", script.strip()):
        words = _words(part)
        env: list[str] = []
        while words and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]) or words[0] in ("cross-env", "npx", "env", "dotenv", "--")):
            word = words.pop(0)
            if "=" in word:
                env.append(word)
        if not words:
            continue
        if _BUILD_STEP.match(" ".join(words)):
            builds.append(" ".join(words))
            continue
        called = re.match(r"^(?:npm|pnpm|yarn)(?: run(?:-script)?)? ([\w:.-]+)$", " ".join(words))
        if called and depth < 3 and isinstance(scripts.get(called.group(1)), str):
            found = _script_runner(scripts[called.group(1)], scripts, depth + 1)
            if found:
                found_all.append(Runner(found.name, tuple(env) + found.env, found.args, found.script, tuple(builds) + found.builds))
            continue
        if words[0] == "node" and "--test" in words:
            found_all.append(Runner("node-test", tuple(env), tuple(w for w in words[1:] if w != "--test"), script, tuple(builds)))
            continue
        at = next((i for i, w in enumerate(words) if _RUNNER_WORD.match(w)), None)
        if at is not None:
            name = _RUNNER_WORD.match(words[at]).group(1).replace("_mocha", "mocha")  # type: ignore[union-attr]
            node_flags = [w for w in words[1:at] if w.startswith("--")] if words[0] == "node" else []
            if node_flags:  # `node --experimental-vm-modules node_modules/jest/bin/jest.js`
                env.append("NODE_OPTIONS=" + " ".join(node_flags))
            found_all.append(Runner(name, tuple(env), tuple(words[at + 1:]), script, tuple(builds)))
    plain = [r for r in found_all if not r.env]
    return (plain or found_all or [None])[0]


def detect_runner(files: dict[str, str]) -> Runner:
    manifest = package_json(files)
    scripts = manifest.get("scripts") or {}
    if not isinstance(scripts, dict):
        scripts = {}
    for key in ("test", "test:unit", "unit", "test:node", "tests"):
        script = scripts.get(key)
        if isinstance(script, str):
            found = _script_runner(script, scripts)
            if found:
                return found
    deps = {**(manifest.get("devDependencies") or {}), **(manifest.get("dependencies") or {})}
    for name in ("vitest", "jest", "mocha", "ava"):
        if name in deps:
            return Runner(name, (), (), f"devDependencies.{name}")
    test_script = str(scripts.get("test", "")) or "(no scripts.test)"
    raise UnsupportedRepository(
        "runner_unsupported",
        f"no test runner with machine-readable output found (scripts.test: {test_script[:200]!r}; looked for vitest, jest, mocha, ava, node --test)",
    )


def carried_args(runner: Runner) -> list[str]:
    """The script's options envfarm keeps (config files, setup modules, timeouts), in order. Positional
    patterns are dropped except mocha's (the other runners find tests by their config or conventions, and
    a task's targets are appended); a kept mocha spec runs with the targets, never twice (mocha dedupes)."""
    keep: list[str] = []
    words = list(runner.args)
    takes_value = VALUE_OPTIONS.get(runner.name, set())
    i = 0
    while i < len(words):
        word = words[i]
        name = word.split("=", 1)[0]
        if runner.name == "vitest" and word in ("run", "watch", "dev", "related") and i == 0:
            i += 1
            continue
        if name in DROPPED_OPTIONS:
            i += 2 if ("=" not in word and (name in takes_value or name in DROPPED_WITH_VALUE)) else 1
            continue
        if word.startswith("-"):
            keep.append(word)
            if "=" not in word and name in takes_value and i + 1 < len(words):
                keep.append(words[i + 1])
                i += 1
        elif runner.name == "mocha":
            keep.append(word)  # mocha's spec paths: without them it reads ./test only (the others find their tests)
        i += 1
    return keep


def runner_command(runner: Runner) -> tuple[str, str]:
    """(test command with `{report}` where the runner writes its report, log parser name)."""
    args = " ".join(shlex.quote(a) for a in carried_args(runner))
    env = " ".join(shlex.quote(e) for e in runner.env)
    prefix = "".join(f"{b} && " for b in runner.builds) + (f"env {env} " if env else "")
    bin_ = "./node_modules/.bin/"
    if runner.name == "jest":
        cmd = f"{bin_}jest --ci --json --outputFile={{report}} --passWithNoTests --watchman=false {args} --runTestsByPath"
        return prefix + re.sub(r"\s+", " ", cmd), "jest"
    if runner.name == "vitest":
        return prefix + re.sub(r"\s+", " ", f"{bin_}vitest run --reporter=json --outputFile={{report}} --passWithNoTests {args}"), "vitest"
    if runner.name == "mocha":
        return prefix + re.sub(r"\s+", " ", f"{bin_}mocha --reporter xunit --reporter-options output={{report}} {args}"), "junit"
    if runner.name == "ava":
        return prefix + re.sub(r"\s+", " ", f"{bin_}ava --tap {args}").strip(), "tap"
    return prefix + re.sub(r"\s+", " ", f"node --test --test-reporter={REPORTER_PATH} --test-reporter-destination={{report}} {args}").strip(), "tap"


def install_command(pm: PackageManager, date: str | None, options: BuildOptions, ignore_scripts: bool = False) -> str:
    scripts = " --ignore-scripts" if ignore_scripts else ""
    if pm.name == "npm":
        if pm.lockfile:
            return f"npm ci --no-audit --no-fund --loglevel=error{scripts}"
        before = f" --before={shlex.quote(date)}" if (date and options.time_cap and not options.offline) else ""
        return f"npm install --no-audit --no-fund --no-package-lock --loglevel=error{before}{scripts}"
    if pm.name == "pnpm":
        frozen = " --frozen-lockfile" if pm.lockfile else ""
        return f"pnpm install{frozen} --config.package-import-method=copy --reporter=append-only{scripts}"
    if pm.berry:
        return f"YARN_NODE_LINKER=node-modules YARN_ENABLE_GLOBAL_CACHE=false yarn install{' --immutable' if pm.lockfile else ''}{' --mode=skip-build' if ignore_scripts else ''}"
    frozen = " --frozen-lockfile" if pm.lockfile else ""
    return f"yarn install{frozen} --non-interactive --ignore-engines --network-timeout 600000{scripts}"


def say(marker: str, message: str) -> str:
    """An `echo` of `marker: message` whose command text does not hold the marker itself: a build log
    echoes each step's command, and a marker there would classify every failure of that step."""
    head, tail = marker[:8], marker[8:]
    return f"echo '{head}''{tail}: '{shlex.quote(message)}"


def activate_command(pm: PackageManager) -> str:
    """Put the package manager on PATH: npm is Debian's; corepack where the base has it, else npm -g."""
    if pm.name == "npm":
        return "true"
    spec = shlex.quote(pm.spec if pm.version else f"{pm.name}@latest")
    return (f"{{ if command -v corepack >/dev/null; then COREPACK_ENABLE_DOWNLOAD_PROMPT=0 corepack enable && "
            f"COREPACK_ENABLE_DOWNLOAD_PROMPT=0 corepack prepare {spec} --activate; "
            f"else npm install -g --no-audit --no-fund --loglevel=error {spec}; fi; }} "
            f"|| {{ {say(PM_MARKER, pm.spec + ' could not be installed')}; exit 1; }}")


class JavaScriptRecipes:
    """Recipes for JavaScript and TypeScript (one toolchain; `language` is what tasks record)."""

    def __init__(self, language: str = "javascript") -> None:
        self.language = language

    def _files(self, mirror: Mirror, commit: str) -> dict[str, str]:
        names = mirror.ls(commit)
        wanted = [n for n in names if n in DEP_FILES or (n.startswith(".github/workflows/") and n.endswith((".yml", ".yaml")))]
        return {n: _text(mirror, commit, n) for n in wanted}

    def version(self, mirror: Mirror, commit: str) -> str:
        files = self._files(mirror, commit)
        declared = re.match(r"^(\d+)\.(\d+)", str(package_json(files).get("version") or ""))
        digest = hashlib.sha256("\0".join(f"{k}\0{v}" for k, v in sorted(files.items())).encode()).hexdigest()[:8]
        return f"{declared.group(1) + '.' + declared.group(2) if declared else '0'}+{digest}"

    def refusal(self, mirror: Mirror, commit: str) -> tuple[str, str] | None:
        """(reason class, reason) for a repository that cannot be mined here, before any build."""
        files = self._files(mirror, commit)
        if "package.json" not in files:
            return "no_package_json", "no package.json at the repository root: not a Node project at this commit"
        try:
            detect_package_manager(files)
            detect_runner(files)
        except UnsupportedRepository as exc:
            return exc.reason_class, exc.reason
        return None

    def strategies(self, mirror: Mirror, commit: str, date: str | None, options: BuildOptions) -> list[Strategy]:
        files = self._files(mirror, commit)
        refused = self.refusal(mirror, commit)
        if refused is not None:  # a builder that does not ask `refusal` first still records why, by building nothing
            return [Strategy(name="refused", python="node", install=(f"{say(REFUSED_MARKER + ' ' + refused[0], refused[1])}; exit 1",),
                             test_cmd="", log_parser="tap")]
        pm = detect_package_manager(files)
        runner = detect_runner(files)
        cmd, parser = runner_command(runner)
        strategies: list[Strategy] = []
        cap = date if (not pm.lockfile and date and options.time_cap and not options.offline) else None
        for choice in choose_node(files):
            notes = (f"node {choice.node} from Debian {choice.suite}: {choice.why}", f"package manager {pm.spec} (lockfile {pm.lockfile or 'none'})",
                     f"runner {runner.name} from {runner.script}")
            # the plan (before '@') names what the install does; the builder skips other Node majors for a
            # plan that named a package no registry has (envfarm.tasks.envsetup.build)
            plan = f"{pm.name}{'-ci' if pm.lockfile else '-install'}" + ("+capped" if cap else "")
            strategies.append(Strategy(
                name=f"{plan}@node{choice.major}", python=f"node{choice.major}", install=(activate_command(pm), install_command(pm, cap, options)),
                test_cmd=cmd, log_parser=parser, exclude_newer=cap, base_image=choice.base_image, notes=notes, plan=(pm, cap, False),
            ))
        return strategies

    def repair(self, strategy: Strategy, log: str, options: BuildOptions) -> Strategy | None:
        """One change that answers the failure in `log`, or None: a cap that left no versions -> today's
        packages (a registry whose publish times are wrong makes every cap fail: see README); an install
        script that failed (a postinstall downloading a browser, a native build) -> install scripts off."""
        if not isinstance(strategy.plan, tuple) or len(strategy.plan) != 3:
            return None
        pm, cap, no_scripts = strategy.plan
        reason = failures.classify_build_failure(log)
        if reason == "no_versions_under_cap" and cap:
            cap, note = None, "time cap left no versions: today's packages"
        elif reason in ("build_error", "lockfile_install_failed") and not no_scripts:
            no_scripts, note = True, "install scripts failed: installed with --ignore-scripts"
        else:
            return None
        name, major = strategy.name.split("@", 1)
        name = name.replace("+capped", "+uncapped") if strategy.exclude_newer and not cap else name
        return replace(strategy, name=f"{name}{'-noscripts' if no_scripts and '-noscripts' not in name else ''}@{major}",
                       install=(strategy.install[0], install_command(pm, cap, options, no_scripts)), exclude_newer=cap,
                       notes=(*strategy.notes, note), plan=(pm, cap, no_scripts))

    def tooling(self, base_image: str) -> ImageRecipe:
        suite = next((s for s in SUITE_NODE if base_image_for(s) == base_image), "bookworm")
        packages = " ".join(TOOLING_PACKAGES[suite])
        return ImageRecipe(
            kind="env",
            name=f"node-tooling-{suite}",
            parent=base_image,
            files=((REPORTER_PATH, REPORTER_SOURCE.read_bytes()),),
            steps=(
                f"export DEBIAN_FRONTEND=noninteractive && apt-get update -qq && apt-get install -y -qq --no-install-recommends {packages}"
                " && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb"
                f" && node --version && npm --version && chmod 0644 {REPORTER_PATH}",
            ),
            network=True,  # Debian's packages, like the base itself
            labels=(("envfarm.io/node", SUITE_NODE.get(suite, "")),),
        )

    def env_steps(self, strategy: Strategy, collect_paths: list[str], options: BuildOptions) -> list[str]:
        if strategy.name == "refused":
            return list(strategy.install)
        ca = ('if [ -n "${SSL_CERT_FILE:-}" ]; then export NODE_EXTRA_CA_CERTS="$SSL_CERT_FILE" npm_config_cafile="$SSL_CERT_FILE"'
              ' YARN_CAFILE="$SSL_CERT_FILE" YARN_HTTPS_CA_FILE_PATH="$SSL_CERT_FILE"; fi')
        caches = "export npm_config_cache=/tmp/npm-cache YARN_CACHE_FOLDER=/tmp/yarn-cache npm_config_store_dir=/tmp/pnpm-store COREPACK_HOME=/opt/corepack CI=1"
        activate, install = strategy.install
        expected = strategy.python.removeprefix("node")
        check_node = f"node --version | grep -q '^v{expected}\\.' || {{ {say(NODE_MARKER, 'this base does not run Node ' + expected)}; node --version; exit 1; }}"
        binary = strategy.test_cmd.split()[0] if strategy.test_cmd.startswith("./node_modules/.bin/") else ""
        if strategy.test_cmd.startswith("env "):
            binary = next((w for w in strategy.test_cmd.split() if w.startswith("./node_modules/.bin/")), "")
        prove = (f"cd /testbed && if [ -n '{binary}' ] && [ ! -x '{binary}' ]; then {say(COLLECT_MARKER, 'the test runner ' + binary + ' was not installed')}; exit 1; fi;"
                 + "".join(f" [ -e {shlex.quote(p)} ] || {{ {say(COLLECT_MARKER, p + ' is missing')}; exit 1; }};" for p in collect_paths[:50])
                 + " true")
        return [
            f"{check_node} && cd /testbed && mkdir -p .git/info && printf 'node_modules/\\n' >> .git/info/exclude && {ca} && {caches}"
            f" && {activate} && {{ {install} > /tmp/install.log 2>&1 || {{ tail -n 40 /tmp/install.log | sed 's/^npm ERR!/npm error/';"
            f" {say(LOCK_MARKER, install.split(' --')[0] + ' failed')}; exit 1; }}; }} && tail -n 5 /tmp/install.log && rm -f /tmp/install.log"
            " && rm -rf /tmp/npm-cache /tmp/yarn-cache /tmp/pnpm-store",
            prove,
            "chown -R 1000:1000 /testbed",
        ]


def _classify_node_failures() -> None:
    """Put the JS signatures ahead of the shared ones in `failures.SIGNATURES` (read at each call), once.

    # TODO(issue 15 owner): replace with a registration hook in failures.py (note in envsetup-interface.md).
    """
    if not any(name == "node_unavailable" for name, _ in failures.SIGNATURES):
        failures.SIGNATURES = SIGNATURES + tuple(failures.SIGNATURES)


_classify_node_failures()
register(JavaScriptRecipes("javascript"))
register(JavaScriptRecipes("typescript"))
