"""Interaction scripts: what to do to the page and what must then be true, as JSON or YAML.

    viewport: {width: 640, height: 480}
    steps:
      - goto: /
        expect: [{visible: "#start"}, {no_console_errors: true}]
      - click: "#start"
        expect: [{text: {selector: "#count", equals: "1"}}, {changes: "#count"}]
      - wait: 800
        expect: [{animates: "canvas"}]

Each step has exactly one action; expectations after it are checked once the action is done (DOM
checks at once, visual ones later from the recorded video).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from envfarm.errors import EnvfarmError
from envfarm.userfiles import read_text, yaml_problem

ACTIONS = ("goto", "click", "type", "press", "scroll", "wait", "hover")


class TextExpect(BaseModel):
    model_config = ConfigDict(extra="forbid")
    selector: str
    equals: str | None = None
    contains: str | None = None


class CountExpect(BaseModel):
    model_config = ConfigDict(extra="forbid")
    selector: str
    equals: int | None = None
    at_least: int | None = None


class Expectation(BaseModel):
    """Exactly one key set. Visual ones (`changes`, `animates`, `still`) are read from the video."""

    model_config = ConfigDict(extra="forbid")
    visible: str | None = None
    in_viewport: str | None = None
    text: TextExpect | None = None
    count: CountExpect | None = None
    no_console_errors: bool | None = None
    no_failed_requests: bool | None = None
    changes: str | None = None  # region (selector, or "page") differs before vs after this step
    animates: str | None = None  # region keeps changing between frames after this step
    still: str | None = None  # region does not change after this step

    @model_validator(mode="after")
    def _one_key(self) -> "Expectation":
        keys = [k for k, v in self.model_dump().items() if v is not None]
        if len(keys) != 1:
            raise ValueError(f"an expectation needs exactly one check, got {keys or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k, v in self.model_dump().items() if v is not None)

    @property
    def visual(self) -> bool:
        return self.kind in ("changes", "animates", "still")


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    goto: str | None = None
    click: str | None = None
    type: dict[str, str] | None = None  # {selector, text}
    press: dict[str, str] | str | None = None  # key, or {selector, key}
    scroll: dict[str, Any] | None = None  # {dy, dx, selector}
    wait: int | None = None  # milliseconds
    hover: str | None = None
    settle_ms: int = 400  # wait after the action before checking (lets the page react and paint)
    window_ms: int = 1000  # how long visual checks watch after the step
    expect: list[Expectation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_action(self) -> "Step":
        present = [a for a in ACTIONS if getattr(self, a) is not None]
        if len(present) != 1:
            raise ValueError(f"a step needs exactly one action of {', '.join(ACTIONS)}; got {present or 'none'}")
        if self.type is not None and not {"selector", "text"} <= set(self.type):
            raise ValueError("a type step needs {selector, text}")
        return self

    @property
    def action(self) -> str:
        return next(a for a in ACTIONS if getattr(self, a) is not None)

    @property
    def label(self) -> str:
        return self.name or f"{self.action} {getattr(self, self.action)}"


class InteractionScript(BaseModel):
    model_config = ConfigDict(extra="forbid")
    viewport: dict[str, int] = Field(default_factory=lambda: {"width": 640, "height": 480})
    step_timeout_ms: int = 5000
    session_timeout_s: float = 60.0
    frame_rate: float = 2.0  # keyframes per second kept for the report and the judge
    check_blank: bool = True
    check_overflow: bool = True
    steps: list[Step]
    rubric: str = ""  # for the judge: what the page should look like and do

    @model_validator(mode="after")
    def _starts_with_goto(self) -> "InteractionScript":
        if not self.steps or self.steps[0].goto is None:
            raise ValueError("the first step must be a goto")
        return self


Mode = Literal["json", "yaml"]


def load_script(source: str | Path | dict[str, Any]) -> InteractionScript:
    """Accept a path to .json/.yaml, a JSON/YAML string, or an already-loaded dict.

    Every way a script can be unreadable (missing, not UTF-8, bad syntax, wrong shape) is an EnvfarmError
    naming the script, so `envfarm verify web` and the verifier API give one line instead of a traceback.
    """
    where = "script"
    data: Any = source
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and source.endswith((".json", ".yaml", ".yml"))):
        path = Path(source)
        where = str(path)
        data = _parse(_read(path), where, json_only=path.suffix == ".json")
    elif isinstance(source, str):
        data = _parse(source, where, json_only=False)
    try:
        return InteractionScript.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise EnvfarmError(f"invalid interaction script ({where}) at {loc or 'top level'}: {first['msg']}", "see verifiers/web/script.py for the step and expectation forms") from exc


def _read(path: Path) -> str:
    return read_text(path, "interaction script", "check the script's path (the SCRIPT argument, or the task's extra.web.script)")


def _parse(text: str, where: str, *, json_only: bool) -> Any:
    """JSON for a .json file, else YAML (a superset of JSON); a syntax error names its line."""
    try:
        return json.loads(text) if json_only else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise EnvfarmError(f"interaction script ({where}) is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                           "fix the script's JSON syntax") from exc
    except yaml.YAMLError as exc:
        raise EnvfarmError(f"interaction script ({where}) is neither JSON nor YAML: {yaml_problem(exc)}",
                           "fix the script's syntax") from exc
