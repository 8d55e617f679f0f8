"""The web reward: a deterministic executability gate times a blend of the deterministic score and the judge's.

    reward = gate x ((1 - judge_weight) x deterministic + judge_weight x judge)

`gate` is deterministic, so no judge (and nothing a page shows a judge) can pay a page that does not run:
- `render` (default, ReLook's rule): 0 when the page failed to render (the browser session broke, the first
  load failed, no video frames, or the page was blank after loading), else 1;
- `executability`: the share of executability checks passed (uncaught exceptions, blank at the end, ...);
- `none`: 1.
`deterministic` is the checks' reward (1 when every check passed, else executability x (0.7 functional +
0.3 visual), capped below 1); `judge` is the weighted mean of the judge's three axes. With no judge the
reward is gate x deterministic. A judge that fails (unreachable, garbage, an ambiguous answer) makes the
reward a typed failure (details.failure = "judge_error", failure_class infrastructure, value 0) that the
RL loop leaves out of training, never a silently deterministic score. A page that did not render is not
sent to the judge: its reward is 0 whatever the judge would say.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal

from envfarm.errors import EnvfarmError
from envfarm.verifiers.reward import Reward
from envfarm.verifiers.web.checks import Scores
from envfarm.verifiers.web.judge import AXES, JudgeClient, JudgeError, JudgeInput
from envfarm.verifiers.web.runner import CheckResult

Gate = Literal["render", "executability", "none"]
GATES = ("render", "executability", "none")
# Checks whose failure means the page never rendered (names as checks.session_checks writes them).
RENDER_CHECKS = ("browser session", "video recorded", "page not blank after load")


@dataclass(frozen=True)
class RewardBlend:
    judge_weight: float = 0.0  # 0: the judge's verdict is recorded but does not move the reward
    gate: Gate = "render"
    axis_weights: dict[str, float] = field(default_factory=lambda: {a: 1.0 for a in AXES})

    def __post_init__(self) -> None:
        if not 0.0 <= self.judge_weight <= 1.0:
            raise EnvfarmError(f"judge_weight {self.judge_weight} is outside [0, 1]", "pass a weight between 0 (checks only) and 1 (judge only)")
        if self.gate not in GATES:
            raise EnvfarmError(f"reward gate {self.gate!r} is not one of {', '.join(GATES)}", "use render (ReLook's rule), executability or none")
        unknown = set(self.axis_weights) - set(AXES)
        if unknown or any(w < 0 for w in self.axis_weights.values()) or not sum(self.axis_weights.values()) > 0:
            raise EnvfarmError(f"judge axis weights {self.axis_weights} are not non-negative weights of {', '.join(AXES)}",
                               "give e.g. {executability: 1, functional: 2, visual: 1}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def render_failure(checks: list[CheckResult], first_load_ok: bool) -> str:
    """Why the page did not render ("" when it did)."""
    if not first_load_ok:
        return "the page did not load"
    failed = [c for c in checks if not c.passed and c.check in RENDER_CHECKS]
    return f"{failed[0].check}: {failed[0].detail}" if failed else ""


def gate_value(blend: RewardBlend, scores: Scores, not_rendered: str) -> float:
    if blend.gate == "render":
        return 0.0 if not_rendered else 1.0
    if blend.gate == "executability":
        return 0.0 if not_rendered else scores.executability
    return 1.0


def blended_reward(blend: RewardBlend, scores: Scores, deterministic: float, not_rendered: str,
                   judge: JudgeClient | None, judge_input: Callable[[], JudgeInput]) -> tuple[float, dict[str, Any]]:
    """(reward value, what to add to Reward.details): the parts of the blend, the judge's verdict or why it
    was skipped, and on a judge failure `failure` / `failure_class` / `judge_error`."""
    gate = gate_value(blend, scores, not_rendered)
    parts: dict[str, Any] = {"gate_rule": blend.gate, "gate": gate, "deterministic": deterministic, "judge_weight": blend.judge_weight,
                             "rendered": not not_rendered}
    if not_rendered:
        parts["not_rendered"] = not_rendered
    out: dict[str, Any] = {"blend": parts}
    if judge is None:
        return round(gate * deterministic, 4), out
    if gate == 0.0:
        out["judge"] = {"skipped": f"the gate is 0 ({not_rendered or 'no executability check passed'}): nothing the judge says can pay it"}
        return 0.0, out
    try:
        verdict = judge.judge(judge_input())
    except JudgeError as exc:
        out.update(failure="judge_error", failure_class="infrastructure", judge_error=exc.to_dict(), reason=f"judge: {exc.line()}")
        return 0.0, out
    judged = verdict.mean(blend.axis_weights)
    out["judge"] = verdict.to_dict()
    parts["judge"] = round(judged, 4)
    return round(gate * ((1 - blend.judge_weight) * deterministic + blend.judge_weight * judged), 4), out


def blend_exploration(reward: Reward, blend: RewardBlend, judge: JudgeClient | None, rubric: str) -> Reward:
    """The blend on an unscripted verification (explorer.explore_web_async, whose value is already 0 when its
    gate fails): the same gate x blend as scripted mode, the judge shown the exploration's video, keyframes
    and interactions (JudgeInput.from_report reads its report.json)."""
    explore = reward.details.get("explore", {})
    gate = explore.get("gate", {})
    not_rendered = "" if gate.get("loaded") and gate.get("not_blank") else \
        "; ".join(gate.get("reasons", [])) or "the page did not load or stayed blank"
    s = reward.details.get("scores", {})
    scores = Scores(float(s.get("executability", 0.0)), float(s.get("functional", 0.0)), float(s.get("visual", 0.0)))
    report = reward.evidence.get("report_json", "")
    value, judged = blended_reward(blend, scores, reward.value, not_rendered, judge, lambda: JudgeInput.from_report(Path(report), rubric))
    return replace(reward, value=value, details={**reward.details, **judged})
