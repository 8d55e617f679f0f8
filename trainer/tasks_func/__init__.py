"""The embedded demo's task family: complete one line of Python so that a unit test passes, graded in a
real sandbox. Small enough for a byte-level tiny model to have a non-zero pass rate at step 0."""

from envfarm.trainer.tasks_func.family import FAMILY, FuncTask, family_tasks
from envfarm.trainer.tasks_func.grader import FuncGrade, grade_batch

__all__ = ["FAMILY", "FuncTask", "family_tasks", "FuncGrade", "grade_batch"]
