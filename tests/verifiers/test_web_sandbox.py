"""A web task whose app was built inside a sandbox: copied out through the sandbox API, served on
loopback, verified in Chromium (the sandbox itself has no network to serve from)."""

from __future__ import annotations

from pathlib import Path

import pytest

from envfarm.task import TaskSpec
from envfarm.verifiers import verifier_for

pytestmark = [pytest.mark.engine, pytest.mark.browser]

WEBAPPS = Path(__file__).parent / "webapps"


@pytest.mark.parametrize("variant, should_pass", [("correct", True), ("dead_button", False)])
def test_web_task_from_a_sandbox(docker_sandbox, web_ready, variant, should_pass):
    docker_sandbox.write_file("/tmp/site/index.html", (WEBAPPS / "clicker" / variant / "index.html").read_bytes())
    script = (WEBAPPS / "clicker" / "script.yaml").read_text()
    task = TaskSpec(instance_id="acme__clicker-3", kind="web", workdir="/tmp/site", extra={"web": {"script": script, "root": "/tmp/site"}})
    reward = verifier_for(task).verify(task, docker_sandbox)
    assert reward.passed is should_pass, reward.details["failed_checks"]
    assert Path(reward.evidence["report_html"]).exists()


def test_web_task_without_extra_web_is_a_clear_error(docker_sandbox):
    from envfarm.errors import EnvfarmError

    task = TaskSpec(instance_id="acme__clicker-4", kind="web")
    with pytest.raises(EnvfarmError, match="has no extra.web"):
        verifier_for(task).verify(task, docker_sandbox)


def test_web_task_without_a_script_is_explored_against_its_rubric(docker_sandbox, web_ready):
    page = Path(__file__).parent / "webcorpus" / "bmi_calculator" / "index.html"
    docker_sandbox.write_file("/tmp/site/index.html", page.read_bytes())
    rubric = 'Clicking "Calculate" shows the BMI and its category.'
    task = TaskSpec(instance_id="acme__bmi-1", kind="web", workdir="/tmp/site", extra={"web": {"root": "/tmp/site", "rubric": rubric}})
    reward = verifier_for(task).verify(task, docker_sandbox)
    assert reward.details["mode"] == "explore"
    assert reward.passed, reward.details["failed_checks"]
    assert reward.details["explore"]["rubric"][0]["passed"] is True
