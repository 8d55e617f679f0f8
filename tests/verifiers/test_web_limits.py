"""Untrusted pages: no network beyond the app, time limits, a memory limit, and no browser left behind."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from envfarm.errors import EnvfarmError
from envfarm.verifiers.web.browser import BrowserHost, BrowserLimits, find_marked
from envfarm.verifiers.web.runner import run_session
from envfarm.verifiers.web.script import load_script
from envfarm.verifiers.web.serve import serve_folder
from envfarm.verifiers.web.verifier import WebVerifier, verify_web_async

pytestmark = pytest.mark.browser

WEBAPPS = Path(__file__).parent / "webapps"


def test_requests_off_the_app_origin_are_blocked(web, tmp_path):
    script = load_script({"steps": [{"goto": "/", "expect": [{"visible": "#title"}, {"no_failed_requests": True}]}]})
    reward = web.run(verify_web_async(web.host, WEBAPPS / "probes" / "network", script, tmp_path))
    blocked = " ".join(reward.details["blocked_requests"])
    for host in ("cdn.example.com", "203.0.113.9", "tracker.example.net", "api.example.org"):
        assert host in blocked
    assert reward.passed, reward.details["failed_checks"]


def test_session_time_limit_ends_a_long_session(web, tmp_path):
    script = load_script({"session_timeout_s": 1.5, "steps": [{"goto": "/"}, {"wait": 20000}]})

    async def go():
        with serve_folder(WEBAPPS / "clicker" / "correct") as origin:
            return await run_session(web.host, origin, script, tmp_path)

    record = web.run(go())
    assert record.timed_out and record.duration_s < 20
    assert any(c.check == "session time limit" and not c.passed for c in record.checks)
    assert web.host.alive  # the shared browser survives one bad session


def _own_host_run(app: Path, script_data: dict, limits: BrowserLimits, out: Path):
    async def go():
        host = BrowserHost(limits)
        await host.start()
        marker = host._marker
        try:
            with serve_folder(app) as origin:
                record = await run_session(host, origin, load_script(script_data), out)
        finally:
            await host.close()
        return host, record, find_marked(marker)

    return asyncio.run(go())


def test_infinite_loop_page_times_out_and_leaves_no_browser(tmp_path, web_ready):
    script = {"step_timeout_ms": 2000, "steps": [{"goto": "/"}, {"click": "#inc"}]}
    host, record, leftovers = _own_host_run(WEBAPPS / "clicker" / "infinite_loop", script, BrowserLimits(), tmp_path)
    assert not record.steps[0].ok and "Timeout" in record.steps[0].error
    assert len(record.steps) == 1  # later steps are not attempted on a hung page
    assert leftovers == []


def test_memory_watchdog_kills_a_runaway_page(tmp_path, web_ready):
    script = {"step_timeout_ms": 3000, "session_timeout_s": 20, "steps": [{"goto": "/"}, {"wait": 15000}]}
    host, record, leftovers = _own_host_run(WEBAPPS / "probes" / "memory_hog", script, BrowserLimits(memory_mb=700), tmp_path)
    assert host.killed_for_memory and host.peak_memory > 700 * 1024 * 1024
    assert not all(s.ok for s in record.steps) or record.error or record.browser_killed
    assert leftovers == []


def test_app_served_by_its_start_command(tmp_path, web_ready):
    app = {"root": str(WEBAPPS / "probes" / "slow_start"), "command": f"{sys.executable} server.py 0.5", "ready_timeout": 20}
    script = {"check_blank": True, "steps": [{"goto": "/", "expect": [{"text": {"selector": "#title", "contains": "start command"}}]}]}
    reward = WebVerifier().verify_app(app, script, tmp_path)
    assert reward.passed, reward.details["failed_checks"]


def test_bad_inputs_are_named():
    with pytest.raises(EnvfarmError, match="first step must be a goto"):
        load_script({"steps": [{"click": "#a"}]})
    with pytest.raises(EnvfarmError, match=r"steps\.0.*exactly one action"):
        load_script({"steps": [{"goto": "/", "click": "#a"}]})
    with pytest.raises(EnvfarmError, match="exactly one check"):
        load_script({"steps": [{"goto": "/", "expect": [{"visible": "#a", "still": "#b"}]}]})
    with pytest.raises(EnvfarmError, match="neither JSON nor YAML"):
        load_script("steps: [goto: /\n  - {")
    with pytest.raises(EnvfarmError, match="has no index.html"):
        with serve_folder(WEBAPPS):
            pass
    with pytest.raises(EnvfarmError, match="does not exist"):
        WebVerifier().verify_app(WEBAPPS / "nope", {"steps": [{"goto": "/"}]})


def test_shared_host_relaunches_a_dead_browser(tmp_path, web_ready):
    script = load_script({"steps": [{"goto": "/", "expect": [{"text": {"selector": "#count", "equals": "0"}}]}]})

    async def go():
        async with BrowserHost() as host:
            first_pid = host.pid
            host.kill()  # what the memory watchdog does to a runaway page's browser
            for _ in range(50):
                if not host.alive:
                    break
                await asyncio.sleep(0.1)
            reward = await verify_web_async(host, WEBAPPS / "clicker" / "correct", script, tmp_path)
            return first_pid, host.pid, host.restarts, reward

    first_pid, new_pid, restarts, reward = asyncio.run(go())
    assert restarts == 1 and new_pid != first_pid
    assert reward.passed, reward.details["failed_checks"]
