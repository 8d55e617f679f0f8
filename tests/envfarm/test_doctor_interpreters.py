"""`envfarm doctor` says which interpreters the machine can give a task environment."""

import pytest

pytestmark = pytest.mark.engine


def test_interpreters_check_names_every_debian_base_and_the_download_switch(engine_client, base_image, monkeypatch):
    from envfarm.doctor import _interpreters
    from envfarm.images.base import SUITE_PYTHON, has_base

    monkeypatch.delenv("ENVFARM_PYTHON_DOWNLOADS", raising=False)
    check = _interpreters()
    built = [suite for suite in SUITE_PYTHON if has_base(engine_client, suite)]
    assert check.ok and built  # the base the test session uses is one of them
    for suite, python in SUITE_PYTHON.items():
        assert f"{python} ({suite})" in check.detail
    assert check.detail.startswith("built: " + ", ".join(f"{SUITE_PYTHON[s]} ({s})" for s in built))
    assert "set ENVFARM_PYTHON_DOWNLOADS=1" in check.detail
    monkeypatch.setenv("ENVFARM_PYTHON_DOWNLOADS", "1")
    assert "other minors (3.6-3.14) from uv downloads" in _interpreters().detail
