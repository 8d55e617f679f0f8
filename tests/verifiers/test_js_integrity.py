"""An agent's diff against a JavaScript/TypeScript task: runner configuration, the test script, lockfiles and
test files never reach the run; editing the runner's configuration or the test script is tampering."""

from __future__ import annotations

from envfarm.verifiers.integrity import filter_patch


def _block(path: str, added: str, new: bool = False) -> str:
    head = f"diff --git a/{path} b/{path}\n" + ("new file mode 100644\n--- /dev/null\n" if new else f"--- a/{path}\n") + f"+++ b/{path}\n"
    return head + ("@@ -0,0 +1 @@\n" if new else "@@ -1 +1 @@\n-x\n") + f"+{added}\n"


def test_runner_config_and_test_script_are_tampering_the_fix_is_kept() -> None:
    diff = (_block("src/sum.js", "module.exports = (a, b) => a + b;")
            + _block("jest.config.js", "module.exports = { testPathIgnorePatterns: ['.'] };")
            + _block(".mocharc.yml", "spec: []")
            + _block("package.json", '  "test": "echo all passed",')
            + _block("package-lock.json", '  "version": "2.0.0",')
            + _block("src/sum.test.js", "test('x', () => {});", new=True))
    filtered = filter_patch(diff)
    assert filtered.kept == ["src/sum.js"]
    dropped = {d.path: d.tampering for d in filtered.dropped}
    assert dropped == {"jest.config.js": True, ".mocharc.yml": True, "package.json": True, "package-lock.json": False, "src/sum.test.js": False}
    assert len(filtered.tampering) == 3


def test_a_package_json_change_that_does_not_touch_the_runner_is_dropped_without_blame() -> None:
    filtered = filter_patch(_block("package.json", '  "description": "sums numbers",'))
    assert not filtered.kept and not filtered.tampering
