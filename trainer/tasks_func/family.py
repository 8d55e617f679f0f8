"""Line-completion tasks checked by unit tests (asserts run after the completed code).

Why this family: the tiny policy is pretrained on Python source with a byte tokenizer and cannot yet
write function bodies (measured pass rate 0/32 on `def add(a, b): return`). GRPO needs some successes
in a group to have a signal, so the family starts where the policy has a few percent (a valid literal
of a given type, a well-formed expression) and includes harder tasks that the scheduler skips while
their pass rate is 0 and revisits as the policy improves. Sources let the scheduler apply quotas.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FuncTask:
    id: str
    prompt: str  # code the policy continues (one line, stopped at the newline)
    test: str  # appended after the completion; the task passes if the program exits 0
    source: str = "literal"  # scheduler source: literal | expr | func
    domain: str = "code"  # MOPD teacher domain

    def program(self, completion: str) -> str:
        """What the sandbox runs: the prompt, the completed line (the stop newline dropped), the test."""
        return self.prompt + completion.rstrip("\n") + "\n" + self.test + "\n"


FAMILY: tuple[FuncTask, ...] = (
    FuncTask("any-value", "x = ", "x", "literal"),
    FuncTask("int-literal", "x: int = ", "assert isinstance(x, int)", "literal"),
    FuncTask("int-sum", "n = 1 + ", "assert isinstance(n, int)", "expr"),
    FuncTask("not-none", "value = None\nx = ", "assert x is not None", "expr"),
    FuncTask("after-import", "import os\nx = ", "x", "literal"),
    FuncTask("paren", "x = (", "x", "expr"),
    FuncTask("else-branch", "x = 0\nif x:\n    y = 1\nelse:\n    y = ", "y", "expr"),
    FuncTask("str-literal", "name: str = ", "assert isinstance(name, str)", "literal"),
    FuncTask("list-literal", "items: list = ", "assert isinstance(items, list)", "literal"),
    FuncTask("bool-literal", "flag: bool = ", "assert isinstance(flag, bool)", "literal"),
    FuncTask("return-zero", "def zero():\n    return", "assert zero() == 0", "func"),
    FuncTask("identity", "def identity(x):\n    return", "assert identity(3) == 3", "func"),
)


def family_tasks(names: list[str] | None = None) -> list[FuncTask]:
    if not names:
        return list(FAMILY)
    by_id = {t.id: t for t in FAMILY}
    unknown = [n for n in names if n not in by_id]
    if unknown:
        from envfarm.errors import EnvfarmError

        raise EnvfarmError(f"unknown demo task(s) {unknown}", f"tasks.names must be among {sorted(by_id)}")
    return [by_id[n] for n in names]
