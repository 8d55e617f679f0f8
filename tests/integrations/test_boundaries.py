"""Import boundaries (DESIGN.md): the agent scaffold imports neither the trainer nor the miner, the core imports no
integration, and an integration without its extra is one error naming the install line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from envfarm.errors import EnvfarmError
from envfarm.integrations import extras


def test_the_scaffold_and_the_cli_import_no_trainer_miner_or_third_party_stack():
    probe = ("import json, sys; import envfarm.cli, envfarm.agent, envfarm.agent.session, envfarm.agent.rollout_cli, "
             "envfarm.agent.task_source, envfarm.integrations.cli; "
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('openenv', 'minisweagent', 'litellm', 'verifiers') "
             "or m.startswith(('envfarm.trainer', 'envfarm.tasks')))))")
    out = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_a_missing_extra_is_one_error_with_the_install_line(monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "openenv", ("openenv-core", "envfarm_no_such_module"))
    with pytest.raises(EnvfarmError) as caught:
        extras.require("openenv")
    assert caught.value.fix == "pip install 'envfarm[openenv]'" and "openenv-core" in caught.value.problem
