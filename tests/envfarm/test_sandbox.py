"""DockerSandbox against the real engine: isolation, limits, timeouts, output caps, files, patches, gc."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap

import pytest

from envfarm.errors import EngineUnavailable, EnvfarmError, ImageMissing, PatchError, SandboxError
from envfarm.sandbox.docker import LABEL_PID, LABEL_RUN, LABEL_TASK, DockerSandbox, SandboxLimits
from envfarm.sandbox.protocol import TIMEOUT_EXIT_CODE, Sandbox

pytestmark = pytest.mark.engine


def test_implements_the_protocol_and_runs_commands(docker_sandbox: DockerSandbox) -> None:
    assert isinstance(docker_sandbox, Sandbox)
    result = docker_sandbox.exec("echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.truncated, result.timed_out) == (3, False, False)
    assert "out" in result.output and "err" in result.output
    argv = docker_sandbox.exec(["python3", "-c", "import sys; print(sys.argv[1])", "a b;c"])
    assert argv.output.strip() == "a b;c"  # argv lists are not re-split by a shell


def test_workdir_and_env(docker_sandbox: DockerSandbox) -> None:
    result = docker_sandbox.exec("pwd; echo $GREETING", workdir="/tmp", env={"GREETING": "hello there"})
    assert result.output.split("\n")[:2] == ["/tmp", "hello there"]


def test_default_isolation(docker_sandbox: DockerSandbox) -> None:
    status = docker_sandbox.exec("cat /proc/self/status").output
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapEff"].strip(), 16) == 0, "every capability must be dropped"
    assert fields["NoNewPrivs"].strip() == "1"
    assert docker_sandbox.exec("id -u").output.strip() == "1000", "the base image's unprivileged user"
    interfaces = docker_sandbox.exec("ls /sys/class/net").output.split()
    assert interfaces == ["lo"], f"no network by default, got {interfaces}"
    labels = docker_sandbox.container.labels
    assert labels[LABEL_RUN] == "pytest" and labels[LABEL_TASK] == "fixture" and labels[LABEL_PID] == str(os.getpid())


def test_timeout_kills_the_whole_process_tree(docker_sandbox: DockerSandbox) -> None:
    result = docker_sandbox.exec("sleep 300 & sleep 301 & (sleep 302; echo never) ; wait", timeout=1.5)
    assert result.timed_out and result.exit_code == TIMEOUT_EXIT_CODE
    assert "timed out" in result.output and "never" not in result.output
    left = docker_sandbox.exec("ps -eo args | grep '^sleep 30' || true").output.strip()
    assert left == "", f"processes survived the timeout: {left}"


def test_timeout_also_kills_processes_that_escape_with_setsid(docker_sandbox: DockerSandbox) -> None:
    result = docker_sandbox.exec("setsid sleep 400 & sleep 401", timeout=1)
    assert result.timed_out
    left = docker_sandbox.exec("ps -eo args | grep '^sleep 40' || true").output.strip()
    assert left == ""


@pytest.mark.parametrize("timeout", [0, -1, float("nan")])
def test_timeout_must_be_positive(docker_sandbox: DockerSandbox, timeout: float) -> None:
    with pytest.raises(EnvfarmError, match="timeout must be a positive"):
        docker_sandbox.exec("true", timeout=timeout if timeout == timeout else -5)


def test_output_is_capped_with_a_marker_and_endless_output_is_harmless(docker_sandbox: DockerSandbox) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = docker_sandbox.exec("yes envfarm", timeout=3, output_limit=64 * 1024)
    assert result.truncated and result.timed_out
    assert "[envfarm: output truncated at 65536 bytes]" in result.output
    assert len(result.output.encode()) < 64 * 1024 + 400
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 50 * 1024, "the caller must not buffer an endless stream"
    exact = docker_sandbox.exec("head -c 1000 /dev/zero | tr '\\0' x", output_limit=1000)
    assert not exact.truncated and len(exact.output) == 1000


def test_missing_binary_gets_a_clear_hint(docker_sandbox: DockerSandbox) -> None:
    result = docker_sandbox.exec("no-such-tool --version")
    assert result.exit_code == 127
    assert "was not found in the sandbox's PATH" in result.output


def test_forkbomb_is_contained(engine_client, base_image) -> None:  # type: ignore[no-untyped-def]
    with DockerSandbox(base_image, run_id="pytest", client=engine_client, limits=SandboxLimits(pids=64)) as sandbox:
        bomb = sandbox.exec("bomb() { bomb | bomb & }; bomb", timeout=5)
        assert bomb.exit_code is not None  # the call returns
        # The sandbox is usable for the very next exec, with no clean-up by the caller (issue #13).
        assert sandbox.exec("echo alive", timeout=20).output.strip() == "alive"
    assert subprocess.run(["true"]).returncode == 0


def test_a_huge_write_is_stopped_by_the_file_size_limit(engine_client, base_image) -> None:  # type: ignore[no-untyped-def]
    limits = SandboxLimits(file_size=32 << 20)
    with DockerSandbox(base_image, run_id="pytest", client=engine_client, limits=limits) as sandbox:
        result = sandbox.exec("dd if=/dev/zero of=$HOME/big bs=1M count=10240", timeout=60)
        assert result.exit_code != 0
        size = int(sandbox.exec("stat -c %s $HOME/big").output.strip())
        assert size <= 32 << 20


def test_memory_limit_is_enforced(engine_client, base_image) -> None:  # type: ignore[no-untyped-def]
    with DockerSandbox(base_image, run_id="pytest", client=engine_client, limits=SandboxLimits(memory="128m")) as sandbox:
        result = sandbox.exec("python3 -c 'x = bytearray(1024 * 1024 * 1024); print(len(x))'", timeout=60)
        assert result.exit_code != 0 and "1073741824" not in result.output


def test_files_round_trip_and_errors(docker_sandbox: DockerSandbox) -> None:
    docker_sandbox.write_file("/home/agent/dir/sub/hello.txt", "héllo\n")
    assert docker_sandbox.read_file("/home/agent/dir/sub/hello.txt") == "héllo\n".encode()
    assert docker_sandbox.exec("stat -c %u /home/agent/dir/sub/hello.txt").output.strip() == "1000"
    payload = bytes(range(256)) * 4096
    docker_sandbox.write_file("/tmp/blob.bin", payload)
    assert docker_sandbox.read_file("/tmp/blob.bin") == payload
    with pytest.raises(SandboxError, match="no file"):
        docker_sandbox.read_file("/nope/missing.txt")
    with pytest.raises(SandboxError, match="directory"):
        docker_sandbox.read_file("/home/agent")


REPO_SETUP = textwrap.dedent(
    """
    set -e
    mkdir -p /home/agent/repo && cd /home/agent/repo
    git init -q . && printf 'one\\ntwo\\nthree\\nfour\\nfive\\nsix\\nseven\\n' > f.txt
    git -c user.email=a@b -c user.name=a add . && git -c user.email=a@b -c user.name=a commit -qm init
    """
)
GOOD = "--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n"
HALF_BAD = (
    "--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n"
    "@@ -5,3 +5,3 @@\n five\n-sixty\n+SIX\n seven\n"
)


def test_apply_patch_is_all_or_nothing_and_names_the_failing_hunk(docker_sandbox: DockerSandbox) -> None:
    assert docker_sandbox.exec(REPO_SETUP).ok
    docker_sandbox.apply_patch(GOOD, workdir="/home/agent/repo")
    assert b"TWO" in docker_sandbox.read_file("/home/agent/repo/f.txt")
    docker_sandbox.exec("git checkout -q f.txt", workdir="/home/agent/repo")
    with pytest.raises(PatchError) as info:
        docker_sandbox.apply_patch(HALF_BAD, workdir="/home/agent/repo")
    assert info.value.hunk == "f.txt @@ -5,3 +5,3 @@"
    assert "fix:" in info.value.line()
    assert docker_sandbox.read_file("/home/agent/repo/f.txt").count(b"two") == 1, "nothing half-applied"
    with pytest.raises(PatchError, match="not a valid unified diff|no file diffs"):
        docker_sandbox.apply_patch("this is not a diff", workdir="/home/agent/repo")
    with pytest.raises(PatchError, match="empty"):
        docker_sandbox.apply_patch("  \n", workdir="/home/agent/repo")


def test_missing_image_and_missing_engine_are_clear(engine_client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ImageMissing, match="make setup"):
        DockerSandbox("envfarm/does-not-exist:1", client=engine_client)
    from envfarm.engine import connect

    with pytest.raises(EngineUnavailable) as info:
        connect("unix:///tmp/no-engine-here.sock")
    assert "DOCKER_HOST" in info.value.line()


def test_close_is_idempotent_and_removes_the_container(engine_client, base_image) -> None:  # type: ignore[no-untyped-def]
    sandbox = DockerSandbox(base_image, run_id="pytest", client=engine_client)
    container_id = sandbox.container.id
    sandbox.close()
    sandbox.close()
    assert not engine_client.containers.list(all=True, filters={"id": container_id})
    with pytest.raises(SandboxError, match="closed"):
        sandbox.exec("true")


CRASHING_CALLER = textwrap.dedent(
    """
    import os, sys, time
    from envfarm.sandbox.docker import DockerSandbox
    sandbox = DockerSandbox(sys.argv[1], run_id=sys.argv[2])
    print(sandbox.container.id, flush=True)
    time.sleep(600)
    """
)


def test_gc_removes_what_a_killed_caller_left_behind(engine_client, base_image, store) -> None:  # type: ignore[no-untyped-def]
    from envfarm.runs import run_scope
    from envfarm.sandbox.gc import collect

    with run_scope(store, "gc-test") as run:
        caller = subprocess.Popen([sys.executable, "-c", CRASHING_CALLER, base_image, run.id], stdout=subprocess.PIPE, text=True)
        container_id = caller.stdout.readline().strip()
        assert container_id
        kept = collect(engine_client, store, dry_run=True)
        assert container_id[:12] not in kept.removed, "a live owner's container must be kept"
        caller.send_signal(signal.SIGKILL)
        caller.wait(30)
        report = collect(engine_client, store)
        assert container_id[:12] in report.removed
    assert not engine_client.containers.list(all=True, filters={"id": container_id})


def test_gc_removes_containers_of_finished_runs(engine_client, base_image, store) -> None:  # type: ignore[no-untyped-def]
    from envfarm.runs import finish_run, run_scope
    from envfarm.sandbox.gc import collect

    with run_scope(store, "gc-finished") as run:
        sandbox = DockerSandbox(base_image, run_id=run.id, client=engine_client)
        assert sandbox.container.id[:12] not in collect(engine_client, store, dry_run=True).removed
        finish_run(store, run.id, "finished", {})
        assert sandbox.container.id[:12] in collect(engine_client, store).removed
        sandbox.close()
