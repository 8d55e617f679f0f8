"""Optional multimodal judge behind an OpenAI-compatible /chat/completions endpoint.

Off by default: the deterministic checks are the reward. When configured (explicitly or through
ENVFARM_JUDGE_URL / ENVFARM_JUDGE_MODEL / ENVFARM_JUDGE_API_KEY), it sees the keyframes in order,
the task's rubric and the failed deterministic checks, and scores the reference's three axes.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from envfarm.errors import EnvfarmError

AXES = ("executability", "functional", "visual")
PROMPT = (
    "You grade a web page from keyframes of a screen recording of a scripted session, in time order.\n"
    "Rubric (what the page should look like and do):\n{rubric}\n\n"
    "Automatic checks that failed: {failed}\n\n"
    "Score each axis from 0 to 10: executability (it loads and runs without visible breakage), "
    "functional (it does what the rubric asks), visual (layout, legibility, polish). Answer with JSON "
    'only: {{"executability": n, "functional": n, "visual": n, "rationale": "one paragraph"}}'
)


@dataclass
class JudgeVerdict:
    executability: float
    functional: float
    visual: float
    rationale: str
    model: str

    def to_dict(self) -> dict:
        return asdict(self)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def parse_verdict(content: str, model: str) -> JudgeVerdict:
    """Read the model's JSON (tolerating ``` fences and surrounding prose); scores end up in [0, 1]."""
    match = re.search(r"\{.*\}", content, re.S)
    if not match:
        raise EnvfarmError(f"the judge answered without JSON: {content[:200]!r}", "use a model that follows JSON instructions, or lower its temperature")
    try:
        data = json.loads(match.group(0))
        scores = {axis: min(max(float(data[axis]) / 10.0, 0.0), 1.0) for axis in AXES}
    except (ValueError, KeyError, TypeError) as exc:
        raise EnvfarmError(f"the judge's JSON lacks numeric {', '.join(AXES)}: {match.group(0)[:200]!r}", "check the judge model's output format") from exc
    return JudgeVerdict(**scores, rationale=str(data.get("rationale", ""))[:2000], model=model)


class JudgeClient:
    def __init__(self, url: str, model: str, api_key: str | None = None, timeout: float = 120.0, max_images: int = 8) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_images = max_images

    @classmethod
    def from_env(cls) -> "JudgeClient | None":
        url = os.environ.get("ENVFARM_JUDGE_URL")
        if not url:
            return None
        return cls(url, os.environ.get("ENVFARM_JUDGE_MODEL", "default"), os.environ.get("ENVFARM_JUDGE_API_KEY"))

    def _pick(self, keyframes: list[Path]) -> list[Path]:
        if len(keyframes) <= self.max_images:
            return keyframes
        step = (len(keyframes) - 1) / (self.max_images - 1)
        return [keyframes[round(i * step)] for i in range(self.max_images)]

    def judge(self, keyframes: list[Path], rubric: str, failed_checks: list[str]) -> JudgeVerdict:
        content: list[dict] = [{"type": "text", "text": PROMPT.format(rubric=rubric or "(none given)", failed="; ".join(failed_checks) or "none")}]
        content += [{"type": "image_url", "image_url": {"url": _data_uri(p)}} for p in self._pick(keyframes)]
        body = {"model": self.model, "messages": [{"role": "user", "content": content}], "temperature": 0}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = httpx.post(f"{self.url}/chat/completions", json=body, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise EnvfarmError(f"the judge endpoint {self.url} is unreachable: {exc}", "check ENVFARM_JUDGE_URL, or unset it to use the deterministic checks only") from exc
        if response.status_code != 200:
            raise EnvfarmError(f"the judge endpoint answered HTTP {response.status_code}: {response.text[:200]}", "check the model name and API key")
        try:
            text = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EnvfarmError(f"the judge's reply is not an OpenAI chat completion: {response.text[:200]}", "point ENVFARM_JUDGE_URL at an OpenAI-compatible /v1 base") from exc
        return parse_verdict(text, self.model)
