"""Web tasks for the RL loop: a prompt, a rubric in plain words, and optionally an interaction script.

A task with a script is verified by running it (scripted mode); a task without one is explored by the
unscripted verifier, which checks what it can of the rubric and leaves the rest to the judge. The
built-in set is small and scripted, so the family runs end to end on any machine; a run's own tasks come
from `web.tasks_file` (YAML or JSON: a list of {id, prompt, rubric, script?, viewport?}).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envfarm.errors import EnvfarmError
from envfarm.userfiles import load_yaml
from envfarm.verifiers.web.script import InteractionScript, load_script

PROMPT = (
    "Write a web page: {prompt}\n"
    "Requirements:\n{rubric}\n"
    "Answer with the whole page as one HTML file in a ```html code block (several files: one block each, its path "
    "after the language, e.g. ```js app.js). Libraries may be imported from a CDN (unpkg, jsDelivr, esm.sh, cdnjs).\n"
)


@dataclass(frozen=True)
class WebItem:
    id: str
    prompt: str
    rubric: list[str]
    script: InteractionScript | None = None
    source: str = "web"  # the scheduler's quota unit
    domain: str = "web"  # the MOPD teacher's domain
    viewport: dict[str, int] = field(default_factory=lambda: {"width": 640, "height": 480})

    @property
    def text(self) -> str:
        """What the policy is asked."""
        return PROMPT.format(prompt=self.prompt.strip(), rubric="\n".join(f"- {r}" for r in self.rubric))

    @property
    def rubric_text(self) -> str:
        return "\n".join(self.rubric)


BUILTIN: list[dict[str, Any]] = [
    {"id": "web-counter", "prompt": "a click counter",
     "rubric": ["a button with id inc labelled 'Add one'", "a number with id count that starts at 0",
                "each click on the button adds one to the number"],
     "script": {"steps": [{"goto": "/", "expect": [{"visible": "#inc"}, {"text": {"selector": "#count", "equals": "0"}}]},
                          {"click": "#inc", "expect": [{"text": {"selector": "#count", "equals": "1"}}, {"changes": "#count"}]},
                          {"click": "#inc", "expect": [{"text": {"selector": "#count", "equals": "2"}}, {"no_console_errors": True}]}]}},
    {"id": "web-paint-board", "prompt": "a pixel-art board where clicking a cell paints it",
     "rubric": ["a board with id board of 8 x 8 cells, each an element with class cell", "clicking a cell paints it in a visible colour"],
     "script": {"steps": [{"goto": "/", "expect": [{"count": {"selector": "#board .cell", "equals": 64}}]},
                          {"click": "#board .cell:nth-child(10)", "expect": [{"changes": "#board"}, {"no_console_errors": True}]}]}},
    {"id": "web-bouncing-ball", "prompt": "a canvas animation of a ball bouncing around",
     "rubric": ["a canvas with id scene", "a ball moves across the canvas on its own, without any input"],
     "script": {"steps": [{"goto": "/", "expect": [{"visible": "#scene"}]},
                          {"wait": 600, "window_ms": 1200, "expect": [{"animates": "#scene"}, {"no_console_errors": True}]}]}},
]


def _item(raw: Any, where: str) -> WebItem:
    if not isinstance(raw, dict):
        raise EnvfarmError(f"web task in {where} is not a mapping: {str(raw)[:80]!r}", "write each task as {id, prompt, rubric, script?}")
    missing = [k for k in ("id", "prompt", "rubric") if not raw.get(k)]
    if missing:
        raise EnvfarmError(f"web task {raw.get('id', '?')!r} in {where} lacks {', '.join(missing)}", "give every task an id, a prompt and a rubric")
    unknown = set(raw) - {"id", "prompt", "rubric", "script", "viewport", "source"}
    if unknown:
        raise EnvfarmError(f"web task {raw['id']!r} in {where} has unknown field(s) {sorted(unknown)}", "use id, prompt, rubric, script, viewport, source")
    rubric = raw["rubric"] if isinstance(raw["rubric"], list) else [line.strip("- ").strip() for line in str(raw["rubric"]).splitlines() if line.strip()]
    script = None
    if raw.get("script"):
        script = load_script({**raw["script"], "rubric": "\n".join(map(str, rubric))})
    viewport = raw.get("viewport") or (script.viewport if script else {"width": 640, "height": 480})
    return WebItem(str(raw["id"]), str(raw["prompt"]), [str(r) for r in rubric], script, str(raw.get("source") or "web"), viewport=viewport)


def load_web_tasks(tasks_file: str = "", names: list[str] | None = None) -> list[WebItem]:
    """The built-in set, or the tasks in `tasks_file`; `names` picks some by id."""
    where = tasks_file or "the built-in web tasks"
    raw = load_yaml(tasks_file, "web tasks file", "set web.tasks_file to a YAML or JSON list of {id, prompt, rubric, script?}") if tasks_file else BUILTIN
    if isinstance(raw, dict) and isinstance(raw.get("tasks"), list):
        raw = raw["tasks"]
    if not isinstance(raw, list) or not raw:
        raise EnvfarmError(f"{where} holds no list of tasks", "write a YAML list of {id, prompt, rubric, script?} (or {tasks: [...]})")
    items = [_item(r, where) for r in raw]
    ids = [i.id for i in items]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise EnvfarmError(f"{where} names task(s) {twice} more than once", "give every web task its own id")
    if names:
        unknown = sorted(set(names) - set(ids))
        if unknown:
            raise EnvfarmError(f"tasks.names {unknown} are not web tasks in {where}", f"pick from {', '.join(ids[:10])}")
        items = [i for i in items if i.id in names]
    return items
