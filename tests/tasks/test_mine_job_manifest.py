"""The mining Job manifest renders, validates against the Kubernetes schemas, and calls real CLI options."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

JOBS = Path(__file__).resolve().parents[2] / "k8s" / "jobs"


def test_mine_job_renders_validates_and_matches_the_cli():
    import kubernetes_validate
    import typer.main

    from envfarm.tasks.cli import app

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl missing: install Debian's kubernetes-client (make setup) to render kustomizations")
    rendered = subprocess.run(["kubectl", "kustomize", str(JOBS)], capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.37", strict=True)
    job = next(d for d in docs if d["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in container["env"]}
    assert env["ENVFARM_DB_URL"]["valueFrom"]["secretKeyRef"]["name"] == "envfarm-db"
    command = typer.main.get_command(app)
    known = {opt for param in command.params for opt in getattr(param, "opts", [])}
    used = set(re.findall(r"(--[a-z-]+)", " ".join(container["args"])))
    assert used and used <= known, f"the Job passes options the CLI does not have: {used - known}"
