"""JavaScript/TypeScript environments: Node base, package manager and runner read from the repository;
end to end on the real engine with fixture repositories that have real git history (offline: the
fixture's dependency is vendored, so no registry is asked)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from envfarm.tasks.envsetup.base import BuildOptions
from envfarm.tasks.envsetup.javascript import (
    REPORTER_PATH, SUITE_NODE, JavaScriptRecipes, Runner, UnsupportedRepository, carried_args, choose_node, detect_package_manager,
    detect_runner, install_command, runner_command,
)


def pkg(**fields) -> dict[str, str]:
    return {"package.json": json.dumps(fields)}


@pytest.mark.parametrize(
    ("files", "suites"),
    [
        (pkg(engines={"node": ">=14"}), ["trixie", "bookworm"]),  # nothing named: the newest allowed first
        (pkg(engines={"node": ">=14"}) | {".nvmrc": "v18.17.0\n"}, ["bookworm", "trixie"]),
        (pkg(engines={"node": "^18 || ^20"}) | {".github/workflows/ci.yml": "node-version: [16.x, 18.x]\n"}, ["bookworm", "trixie"]),
        (pkg(engines={"node": ">= 12.0.0 < 13"}), ["bullseye"]),  # spaces after operators, as real manifests write them
        (pkg(engines={"node": ">=22"}), ["trixie"]),  # met by none: the nearest miss, with the reason
        (pkg(engines={"node": "lts/*"}) | {".node-version": "20"}, ["trixie", "bookworm"]),  # not a range: ignored
        (pkg(), ["trixie", "bookworm"]),
    ],
)
def test_node_from_the_debian_base_that_fits(files: dict[str, str], suites: list[str]) -> None:
    chosen = choose_node(files)
    assert [c.suite for c in chosen] == suites
    assert all(c.node == SUITE_NODE[c.suite] for c in chosen)
    if suites == ["trixie"] and "22" in files["package.json"]:
        assert "met by no Debian base" in chosen[0].why


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"package-lock.json": "{}"}, ("npm", "", "package-lock.json", False)),
        ({"npm-shrinkwrap.json": "{}"}, ("npm", "", "npm-shrinkwrap.json", False)),
        ({"yarn.lock": "# yarn lockfile v1\n"}, ("yarn", "1.22.22", "yarn.lock", False)),
        ({"yarn.lock": "__metadata:\n  version: 8\n"}, ("yarn", "4", "yarn.lock", True)),
        ({"pnpm-lock.yaml": "lockfileVersion: '6.0'\n"}, ("pnpm", "8", "pnpm-lock.yaml", False)),
        ({"pnpm-lock.yaml": "lockfileVersion: 5.4\n"}, ("pnpm", "7", "pnpm-lock.yaml", False)),
        (pkg(packageManager="pnpm@9.1.0+sha512.abc") | {"pnpm-lock.yaml": "lockfileVersion: '9.0'\n"}, ("pnpm", "9.1.0", "pnpm-lock.yaml", False)),
        (pkg(packageManager="yarn@3.6.4") | {"yarn.lock": "__metadata:\n"}, ("yarn", "3.6.4", "yarn.lock", True)),
        ({}, ("npm", "", "", False)),
    ],
)
def test_package_manager_from_the_lockfile(files: dict[str, str], expected: tuple) -> None:
    pm = detect_package_manager(files)
    assert (pm.name, pm.version, pm.lockfile, pm.berry) == expected


def test_bun_is_refused_with_a_reason() -> None:
    with pytest.raises(UnsupportedRepository) as info:
        detect_package_manager({"bun.lockb": ""})
    assert info.value.reason_class == "package_manager_unsupported"


def test_time_capped_install_without_a_lockfile() -> None:
    npm = detect_package_manager({})
    assert install_command(npm, "2021-03-04T00:00:00Z", BuildOptions()) .endswith("--before=2021-03-04T00:00:00Z")
    assert "--before" not in install_command(npm, "2021-03-04T00:00:00Z", BuildOptions(time_cap=False))
    assert install_command(detect_package_manager({"package-lock.json": "{}"}), "2021-03-04", BuildOptions()).startswith("npm ci")


@pytest.mark.parametrize(
    ("scripts", "dev", "runner", "cmd_has", "parser"),
    [
        ({"test": "jest --config jest.unit.js --coverage src/"}, {}, "jest", ["--json --outputFile={report}", "--config jest.unit.js", "--runTestsByPath"], "jest"),
        ({"test": "cross-env TZ=UTC vitest run --reporter=dot"}, {}, "vitest", ["env TZ=UTC", "vitest run --reporter=json --outputFile={report}"], "vitest"),
        ({"test": "mocha -r ts-node/register 'test/**/*.spec.ts' --timeout 5000"}, {}, "mocha", ["--reporter xunit --reporter-options output={report}", "-r ts-node/register", "'test/**/*.spec.ts'", "--timeout 5000"], "junit"),
        ({"test": "npm run lint && ava --verbose"}, {}, "ava", ["ava --tap"], "tap"),
        ({"test": "node --test --import tsx test/"}, {}, "node-test", [f"--test-reporter={REPORTER_PATH}", "--test-reporter-destination={report}", "--import tsx"], "tap"),
        ({"test": "npm run test:unit", "test:unit": "vitest"}, {}, "vitest", ["vitest run"], "vitest"),
        ({"test": "make check"}, {"jest": "^29"}, "jest", ["jest --ci"], "jest"),
    ],
)
def test_runner_from_package_json(scripts, dev, runner, cmd_has, parser) -> None:
    found = detect_runner(pkg(scripts=scripts, devDependencies=dev))
    assert found.name == runner
    cmd, log_parser = runner_command(found)
    assert log_parser == parser
    for part in cmd_has:
        assert part in cmd, cmd
    assert "--coverage" not in cmd and "--reporter=dot" not in cmd and " src/" not in cmd


def test_a_runner_with_no_machine_readable_output_is_refused() -> None:
    with pytest.raises(UnsupportedRepository) as info:
        detect_runner(pkg(scripts={"test": "karma start --single-run"}, devDependencies={"karma": "6"}))
    assert info.value.reason_class == "runner_unsupported" and "karma start" in info.value.reason


def test_carried_args_keep_values_of_value_options() -> None:
    runner = Runner("jest", (), ("--watch", "-c", "cfg.js", "--maxWorkers", "2", "tests/"), "scripts.test")
    assert carried_args(runner) == ["-c", "cfg.js", "--maxWorkers", "2"]


# -- end to end on the real engine --------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_tooling(engine_client, base_image) -> str:
    from envfarm.images.build import image_exists, image_id

    recipe = JavaScriptRecipes().tooling(base_image)
    tag = recipe.tag(image_id(engine_client, recipe.parent))
    if not image_exists(engine_client, tag):
        pytest.skip("the Node tooling layer over the bookworm base is not built: run 'make setup' (envfarm images build tooling --language javascript)")
    return tag


@pytest.fixture(scope="module")
def js_mined(node_tooling, tmp_path_factory):
    from envfarm.store import Store
    from envfarm.tasks.pipeline import MineConfig, run_inline

    from .js_fixtures import make_js_world

    home = tmp_path_factory.mktemp("js-mine")
    dump = make_js_world(home / "world")
    store = Store(f"sqlite:///{home / 'envfarm.db'}")
    config = MineConfig(home=home, offline_dir=dump, repeats=1, run_id="pytest-mine-js", options=BuildOptions(offline=True))
    config.filters = replace(config.filters, language="auto")
    run_inline([("acme/jscalc", ""), ("acme/jsstale", ""), ("acme/jskarma", "")], config, store)
    return {"store": store, "home": home}


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.timeout(1800)  # the module's mining pass (3 fixture repositories) is charged to the first test
def test_a_node_fix_validates_with_file_qualified_ids(js_mined) -> None:
    from envfarm.store.mining import MiningCandidateRow, MiningRepoRow
    from envfarm.tasks.store import load_tasks

    store = js_mined["store"]
    tasks = {t.instance_id: t for t in load_tasks(store)}
    assert sorted(tasks) == ["acme__jscalc-2"], tasks
    task = tasks["acme__jscalc-2"]
    assert task.language == "javascript"
    assert task.FAIL_TO_PASS == ["test/calc.test.js > add > adds two numbers"]
    assert task.PASS_TO_PASS == ["test/calc.test.js > twice"]
    assert task.install.log_parser == "tap" and task.install.python == "node18" and task.install.base_image.endswith("bookworm")
    assert task.extra["test_directives"] == ["test/calc.test.js"]
    with store.session() as session:
        cand = session.get(MiningCandidateRow, "acme__jscalc-2")
        assert 0 < cand.detail["instance_layer_bytes"] < 1_000_000  # node_modules lives in the env layer
        repo = session.get(MiningRepoRow, "acme/jscalc")
        assert repo.detail["language"] == "javascript" and repo.detail["language_evidence"] == "root manifest package.json"


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.timeout(1800)  # the module's mining pass (3 fixture repositories) is charged to the first test
def test_bad_javascript_input_is_a_recorded_reason_per_candidate(js_mined) -> None:
    from envfarm.store.mining import MiningCandidateRow, MiningEnvRow

    store = js_mined["store"]
    with store.session() as session:
        stale = session.get(MiningCandidateRow, "acme__jsstale-2")
        karma = session.get(MiningCandidateRow, "acme__jskarma-2")
        envs = {r.repo: r for r in session.query(MiningEnvRow).all()}
    assert (stale.status, stale.reason_class) == ("env_failed", "lockfile_out_of_date"), stale.reason
    assert "npm ci" in envs["acme/jsstale"].reason
    assert (karma.status, karma.reason_class) == ("env_failed", "runner_unsupported"), karma.reason
    assert "karma start" in karma.reason


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.timeout(1800)  # the module's mining pass (3 fixture repositories) is charged to the first test
def test_node_modules_is_in_the_env_layer_and_hidden_from_git(js_mined, engine_client) -> None:
    from envfarm.sandbox.docker import DockerSandbox
    from envfarm.tasks.store import load_tasks

    task = load_tasks(js_mined["store"])[0]
    with DockerSandbox(task.image, run_id="pytest-mine-js", task_id=task.instance_id, client=engine_client) as box:
        out = box.exec("ls -d node_modules/tinyjs && git status --porcelain && node --version", workdir="/testbed").output
    assert "node_modules/tinyjs" in out and out.strip().splitlines()[-1].startswith("v18.")
    assert "??" not in out  # nothing untracked: node_modules is excluded


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.timeout(1800)  # the module's mining pass (3 fixture repositories) is charged to the first test
def test_export_carries_language_and_harness_ids(js_mined, tmp_path: Path) -> None:
    pytest.importorskip("swebench", reason="the swebench package (pinned in pyproject.toml) is not installed")
    from envfarm.tasks.export import export_jsonl

    out = tmp_path / "tasks.jsonl"
    assert export_jsonl(js_mined["store"], out) == 1
    row = json.loads(out.read_text())
    assert row["language"] == "javascript" and row["instance_id"] == "acme__jscalc-2" and row["log_parser"] == "parse_log_tap"
    assert json.loads(row["FAIL_TO_PASS"]) == ["- adds two numbers"]


def test_failure_markers_are_not_in_the_step_text() -> None:
    """A build log echoes each step's command: a marker written there would classify every failure of the step."""
    from envfarm.tasks.envsetup import failures, javascript

    from envfarm.tasks.envsetup.base import Strategy

    strategy = Strategy(name="npm-ci@node18", python="node18", install=("true", "npm ci"), test_cmd="./node_modules/.bin/jest", log_parser="jest")
    steps = JavaScriptRecipes().env_steps(strategy, ["test/a.test.js"], BuildOptions())
    text = "\n".join(steps)
    for marker in (javascript.NODE_MARKER, javascript.LOCK_MARKER, failures.COLLECT_MARKER):
        assert marker not in text
    assert failures.classify_build_failure(text + "\nnpm error `npm ci` can only install packages when your package.json and package-lock.json are in sync\n"
                                           + javascript.LOCK_MARKER + ": npm ci failed") == "lockfile_out_of_date"


@pytest.mark.parametrize(
    ("scripts", "cmd_has", "cmd_lacks"),
    [
        # github-readme-stats: ESM through a node flag before Jest's own script
        ({"test": "node --experimental-vm-modules node_modules/jest/bin/jest.js --coverage"}, ["env NODE_OPTIONS=--experimental-vm-modules ./node_modules/.bin/jest"], ["--coverage"]),
        # dayjs: time-zone passes under TZ=... first, then the plain suite: the plain one wins
        ({"test": "cross-env TZ=Pacific/Auckland npm run test-tz && jest --coverage --coverageThreshold=\"{ \\\"global\\\": {} }\"",
          "test-tz": "date && jest test/timezone.test --coverage=false"}, ["./node_modules/.bin/jest --ci"], ["TZ=", "coverageThreshold", "timezone.test"]),
        # axios: lint first, then the unit suite through a wrapper script, then module checks
        ({"test": "npm run test:eslint && npm run test:mocha && npm run test:exports", "test:eslint": "eslint lib",
          "test:mocha": "node bin/ssl_hotfix.js mocha test/unit/**/*.js --timeout 30000 --exit",
          "test:exports": "node bin/ssl_hotfix.js mocha test/module/test.js --timeout 30000 --exit"}, ["'test/unit/**/*.js' --timeout 30000 --exit"], ["test/module"]),
        # marked: build steps before the runner run before the tests (their output is what the tests import)
        ({"test": "npm run build:reset && npm run build:docs && npm run test:unit", "test:unit": "node --test --test-reporter=spec test/unit/*.test.js"},
         ["npm run build:reset && npm run build:docs && node --test"], ["--test-reporter=spec", "test/unit/*.test.js"]),
    ],
)
def test_runner_from_real_repositories_scripts(scripts, cmd_has, cmd_lacks) -> None:
    cmd, _ = runner_command(detect_runner(pkg(scripts=scripts)))
    for part in cmd_has:
        assert part in cmd, cmd
    for part in cmd_lacks:
        assert part not in cmd, cmd


@pytest.mark.parametrize(
    ("npm_lines", "reason_class"),
    [
        ("npm error code ETARGET\nnpm error notarget No matching version found for accepts@~1.3.8 with a date before 1/31/2019.", "no_versions_under_cap"),
        ("npm error code ENOVERSIONS\nnpm error No versions available for accepts", "no_versions_under_cap"),
        ("npm error code ETARGET\nnpm error notarget No matching version found for left-pad@^9.0.0.", "no_matching_distribution"),
        ("npm error code ERESOLVE\nnpm error ERESOLVE unable to resolve dependency tree", "resolver_conflict"),
        ("npm error code 1\nnpm error command failed\nnpm error command sh -c node install.js", "lockfile_install_failed"),
    ],
)
def test_npm_failures_get_their_class(npm_lines: str, reason_class: str) -> None:
    """npm's own lines (as npm 10 prints them; npm 9's `npm ERR!` is rewritten to that by the install step)."""
    from envfarm.tasks.envsetup import failures, javascript

    assert failures.classify_build_failure(f"{npm_lines}\n{javascript.LOCK_MARKER}: npm install failed") == reason_class


def test_strategies_and_repairs_without_a_lockfile(tmp_path: Path) -> None:
    """Capped first; a cap that leaves no versions is repaired to today's packages, a failed install
    script to --ignore-scripts; a stale lockfile has no repair. Other Node majors follow as their own roots."""
    import subprocess

    from envfarm.tasks.mirror import Mirror

    from .fixtures import git, write

    work = tmp_path / "w"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    write(work, {"package.json": json.dumps({"name": "x", "engines": {"node": ">=18"}, "devDependencies": {"mocha": "10"}})})
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "init")
    subprocess.run(["git", "clone", "-q", "--mirror", str(work), str(tmp_path / "m.git")], check=True)
    recipes = JavaScriptRecipes()
    roots = recipes.strategies(Mirror(tmp_path / "m.git"), "HEAD", "2019-01-31T00:00:00Z", BuildOptions())
    assert [s.name for s in roots] == ["npm-install+capped@node20", "npm-install+capped@node18"]
    assert "--before=2019-01-31T00:00:00Z" in roots[0].install[1] and roots[0].exclude_newer
    uncapped = recipes.repair(roots[0], "npm error code ENOVERSIONS\nnpm error No versions available for accepts", BuildOptions())
    assert uncapped is not None and uncapped.name == "npm-install+uncapped@node20" and "--before" not in uncapped.install[1]
    assert uncapped.exclude_newer is None
    scripts = recipes.repair(uncapped, "npm error code 1\nnpm error command failed\nENVFARM_LOCKFILE_INSTALL_FAILED: npm install failed", BuildOptions())
    assert scripts is not None and scripts.name == "npm-install+uncapped-noscripts@node20" and "--ignore-scripts" in scripts.install[1]
    assert recipes.repair(scripts, "npm error code 1\nENVFARM_LOCKFILE_INSTALL_FAILED: x", BuildOptions()) is None  # nothing left to change
    stale = "npm error `npm ci` can only install packages when your package.json and package-lock.json are in sync"
    assert recipes.repair(roots[0], stale, BuildOptions()) is None


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.timeout(1800)  # the module's mining pass (3 fixture repositories) is charged to the first test
def test_grading_a_working_tree_leaves_node_modules_alone(js_mined, engine_client) -> None:
    """Packages ship their own jest.config.js / package.json; inside the git-excluded node_modules they are
    the environment's: grading the agent's working tree neither restores them nor calls them tampering."""
    from envfarm.sandbox.docker import DockerSandbox
    from envfarm.tasks.store import load_tasks
    from envfarm.verifiers.run import run_tests

    task = load_tasks(js_mined["store"])[0]
    with DockerSandbox(task.image, run_id="pytest-mine-js", task_id=task.instance_id, client=engine_client) as box:
        box.exec("mkdir -p node_modules/fakepkg && echo '{}' > node_modules/fakepkg/package.json && echo 'x' > node_modules/fakepkg/jest.config.js",
                 workdir="/testbed")
        box.apply_patch(task.patch, workdir="/testbed")
        run = run_tests(box, task, None, timeout=300)
        left = box.exec("ls node_modules/fakepkg", workdir="/testbed").output.split()
    assert run.trustworthy and not run.tampering, (run.problems, run.tampering)
    assert run.results["test/calc.test.js > add > adds two numbers"].succeeded
    assert sorted(left) == ["jest.config.js", "package.json"]
