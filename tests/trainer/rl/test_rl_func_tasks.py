"""The demo task family graded in a real sandbox: right answers pass, wrong ones fail, a hanging program
is cut by its own limit, and a grading batch that overruns raises (the worker then retries/records it)."""

from __future__ import annotations

import pytest

from envfarm.errors import EnvfarmError, SandboxError
from envfarm.trainer.tasks_func import FAMILY, family_tasks, grade_batch

pytestmark = pytest.mark.engine
BY_ID = {t.id: t for t in FAMILY}


def test_correct_and_wrong_completions(docker_sandbox):
    cases = [("int-literal", "6\n", True), ("int-literal", "'6'\n", False), ("str-literal", "'ok'\n", True),
             ("return-zero", " 0\n", True), ("return-zero", " 1\n", False), ("identity", " x\n", True),
             ("any-value", "(", False), ("else-branch", "2\n", True), ("not-none", "None\n", False),
             ("any-value", "1\x00\n", False), ("str-literal", "'\u00e9\ud800'\n", False)]  # NUL and a lone surrogate: graded, not crashed
    grades = grade_batch(docker_sandbox, [BY_ID[t].program(c) for t, c, _ in cases], per_program_timeout=5)
    assert [g.passed for g in grades] == [ok for _, _, ok in cases]
    assert "SyntaxError" in grades[6].error and "AssertionError" in grades[1].error


def test_a_hanging_program_times_out_alone(docker_sandbox):
    grades = grade_batch(docker_sandbox, ["while True: pass", "x = 1"], per_program_timeout=1)
    assert (grades[0].passed, grades[0].exit_code, grades[1].passed) == (False, 124, True)


def test_a_batch_that_overruns_raises_for_the_caller_to_retry(docker_sandbox):
    with pytest.raises(SandboxError, match="timed out"):
        grade_batch(docker_sandbox, ["import time; time.sleep(3)"], per_program_timeout=10, batch_timeout=1)


def test_unknown_task_names_are_named():
    with pytest.raises(EnvfarmError, match="unknown demo task"):
        family_tasks(["int-literal", "nope"])


def test_the_registered_family_serves_the_configured_tasks_and_their_programs():
    """What the trainer and every worker get for tasks.family=func: the named tasks in the given order, each
    turning a completion into the program the grader runs."""
    from envfarm.trainer.families.func import FuncFamily
    from envfarm.trainer.loop.config import load_config
    from envfarm.trainer.loop.family import open_family

    family = open_family(load_config(None, ["tasks.family=func", "tasks.names=[return-zero, int-literal]"]))
    assert isinstance(family, FuncFamily)
    assert [(t.id, t.source, t.domain) for t in family.tasks()] == [("return-zero", "func", "code"), ("int-literal", "literal", "code")]
    assert family.tasks()[0].program(" 0\n") == "def zero():\n    return 0\nassert zero() == 0\n"
    assert [t.id for t in open_family(load_config(None, [])).tasks()] == [t.id for t in FAMILY]  # empty names: all of them
