"""Issue #13 on the real engine: nothing an exec starts outlives it, limits are per sandbox, the container
log and the disk a sandbox can write are bounded, an owner's SIGTERM removes its containers, and the file
API's edges fail loudly. Forkbombs are bounded by small pids limits; no test asserts on timings."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from envfarm.errors import SandboxError
from envfarm.sandbox.docker import DockerSandbox, SandboxLimits

pytestmark = pytest.mark.engine

SURVIVORS = "ps -eo uid=,args= | awk '$1 == 1000' | grep -c 'sleep 4[0-9][0-9]' || true"


def survivors(sandbox: DockerSandbox) -> int:
    return int(sandbox.exec(SURVIVORS, timeout=30).output.strip().splitlines()[-1])


@pytest.fixture
def small(engine_client, base_image):  # type: ignore[no-untyped-def]
    with DockerSandbox(base_image, run_id="pytest", task_id="containment", client=engine_client,
                       limits=SandboxLimits(pids=64)) as sandbox:
        yield sandbox


@pytest.mark.parametrize("escape", [
    "setsid sleep 401 &",
    "nohup sleep 402 > /dev/null 2>&1 &",
    "( (sleep 403 &) & ) ;",
    "env -i setsid sleep 404 &",
    "env -i /usr/bin/setsid -f sleep 405;",
])
def test_nothing_an_exec_started_survives_it(small: DockerSandbox, escape: str) -> None:
    result = small.exec(f"{escape} echo started", timeout=20)
    assert result.exit_code == 0 and "started" in result.output
    assert survivors(small) == 0


def test_survivors_are_killed_after_a_timeout_and_after_an_error(small: DockerSandbox) -> None:
    timed = small.exec("setsid sleep 406 & nohup sleep 407 & sleep 300", timeout=1)
    assert timed.timed_out
    assert survivors(small) == 0
    failed = small.exec("setsid sleep 408 & exit 7", timeout=20)
    assert failed.exit_code == 7
    assert survivors(small) == 0


def test_killing_the_wrapper_does_not_let_anything_escape(small: DockerSandbox) -> None:
    # The agent shares the wrapper's uid and can kill it; the engine-side sweep after the exec still runs.
    small.exec("setsid sleep 409 & for p in $(pgrep -f envfarm-rc); do kill -9 $p; done; sleep 2", timeout=20)
    assert survivors(small) == 0


def test_a_forkbomb_leaves_the_sandbox_usable_with_nothing_left(small: DockerSandbox) -> None:
    small.exec("f(){ f|f& };f", timeout=5)
    after = small.exec("ps -eo uid=,args= | awk '$1 == 1000' | grep -vc 'ps -eo\\|awk\\|grep\\|sh -c\\|head\\|cat\\|timeout\\|setsid'; true",
                       timeout=30)
    assert after.exit_code == 0
    assert after.output.strip().splitlines()[-1] == "0", after.output
    assert small.exec("echo alive", timeout=20).output.strip() == "alive"


def test_the_agent_cannot_reach_init_or_the_main_process(small: DockerSandbox) -> None:
    out = small.exec("ps -o uid= -p 1; echo x > /proc/1/fd/1 && echo wrote", timeout=20)
    assert out.output.split()[0] == "65534" and "wrote" not in out.output
    small.exec("kill -9 -1; kill -9 1", timeout=20)  # kills only the agent's own processes (its output too)
    assert small.exec("echo still-here", timeout=20).output.strip() == "still-here"


def test_detach_is_the_explicit_way_to_keep_a_server(small: DockerSandbox) -> None:
    started = small.exec("python3 -m http.server 8765 --bind 127.0.0.1", detach=True)
    assert started.exit_code == 0
    probe = ("python3 -c \"import urllib.request,time\n"
             "for _ in range(100):\n"
             "    try: print(urllib.request.urlopen('http://127.0.0.1:8765').status); break\n"
             "    except OSError: time.sleep(0.1)\"")
    assert small.exec(probe, timeout=30).output.strip() == "200"
    assert small.exec(probe, timeout=30).output.strip() == "200", "the server survives later execs"
    small.exec("setsid sleep 410 &", timeout=20)
    assert survivors(small) == 0, "an ordinary exec's escapes are still swept while a server is kept"
    small.stop_detached()
    gone = small.exec("ps -eo args= | grep -c '^python3 -m http.server' || true", timeout=20)
    assert gone.output.strip().splitlines()[-1] == "0"


def test_process_limits_are_per_sandbox(engine_client, base_image) -> None:  # type: ignore[no-untyped-def]
    """RLIMIT_NPROC is counted per host uid: with it at pids*4, 300 processes in one sandbox made a fresh
    sandbox with pids=64 (nproc 256) fail "Cannot fork"."""
    busy = DockerSandbox(base_image, run_id="pytest", task_id="busy", client=engine_client, limits=SandboxLimits(pids=400))
    fresh = DockerSandbox(base_image, run_id="pytest", task_id="fresh", client=engine_client, limits=SandboxLimits(pids=64))
    def hold() -> None:
        try:
            busy.exec("for i in $(seq 300); do sleep 120 & done; wait", timeout=120)
        except SandboxError:
            pass  # expected: the test closes the busy sandbox under this exec once the fresh one has forked

    holding = threading.Thread(target=hold, daemon=True)
    try:
        holding.start()
        count = 0
        for _ in range(300):
            count = len(engine_client.api.top(busy.container.id).get("Processes") or [])
            if count >= 300:
                break
            threading.Event().wait(0.1)
        assert count >= 300, f"the busy sandbox only reached {count} processes"
        forked = fresh.exec("for i in 1 2 3 4 5 6 7 8; do sh -c 'echo ok' & done; wait", timeout=30)
        assert forked.output.count("ok") == 8 and "fork" not in forked.output, forked.output
    finally:
        busy.close()
        fresh.close()
        holding.join(30)


def test_the_container_log_is_not_kept(small: DockerSandbox) -> None:
    small.container.reload()
    assert small.container.attrs["HostConfig"]["LogConfig"]["Type"] == "none"
    out = small.exec("head -c 1048576 /dev/zero > /proc/1/fd/1 && echo wrote-log; "
                     "for p in $(pgrep -u 65534); do echo x > /proc/$p/fd/1 && echo wrote-log; done; true", timeout=20)
    assert "wrote-log" not in out.output


def test_every_writable_place_is_a_size_capped_tmpfs(engine_client, base_image) -> None:  # type: ignore[no-untyped-def]
    limits = SandboxLimits(writable_size="32m", tmpfs_size="32m", memory="512m")
    with DockerSandbox(base_image, run_id="pytest", task_id="disk", client=engine_client, limits=limits) as sandbox:
        assert sandbox.disk_bounded
        listing = sandbox.exec(
            "find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -writable -type d -print -prune 2>/dev/null; true",
            timeout=60).output.split()
        mounts = {line.split()[1]: line.split()[2] for line in sandbox.exec("cat /proc/mounts").output.splitlines()}

        def filesystem(path: str) -> str:
            best = max((m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")), key=len)
            return mounts[best]

        assert "/home/agent" in listing and "/tmp" in listing
        on_disk = [path for path in listing if filesystem(path) != "tmpfs"]
        assert on_disk == [], f"writable directories outside a tmpfs: {on_disk}"
        big = sandbox.exec("dd if=/dev/zero of=/home/agent/big bs=1M count=200 2>&1; stat -c %s /home/agent/big", timeout=60)
        assert big.exit_code == 0
        assert int(big.output.split()[-1]) <= 32 << 20
        assert "Read-only file system" in sandbox.exec("touch /usr/x /x 2>&1; true").output
        sizes = engine_client.api.containers(all=True, size=True, filters={"id": sandbox.container.id})
        if sizes and sizes[0].get("SizeRw") is not None:
            assert sizes[0]["SizeRw"] < 1 << 20, "the writable layer on the host disk must stay empty"


SIGTERMED_CALLER = textwrap.dedent(
    """
    import sys, time
    from envfarm.sandbox.docker import DockerSandbox
    sandbox = DockerSandbox(sys.argv[1], run_id="pytest-sigterm")
    print(sandbox.container.id, flush=True)
    time.sleep(600)
    """
)


def test_an_owner_killed_with_sigterm_removes_its_container(engine_client, base_image) -> None:  # type: ignore[no-untyped-def]
    caller = subprocess.Popen([sys.executable, "-c", SIGTERMED_CALLER, base_image], stdout=subprocess.PIPE, text=True)
    container_id = caller.stdout.readline().strip()
    assert container_id
    caller.send_signal(signal.SIGTERM)
    caller.wait(60)
    left = engine_client.containers.list(all=True, filters={"id": container_id})
    for container in left:
        container.remove(force=True)
    assert not left, "SIGTERM left the container behind"


# -- API edges ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 1e12, True, "5"])
def test_bad_timeouts_are_refused_before_the_command_starts(docker_sandbox: DockerSandbox, timeout: object) -> None:
    with pytest.raises(SandboxError, match="timeout must be a positive number.*fix:"):
        docker_sandbox.exec("touch /tmp/ran", timeout=timeout)  # type: ignore[arg-type]
    assert docker_sandbox.exec("test -e /tmp/ran && echo ran || echo clean").output.strip() == "clean"


@pytest.mark.parametrize("path", ["", "/home/agent/", "/home/agent/.", "/home/agent"])
def test_write_file_never_replaces_a_directory_or_writes_nothing(docker_sandbox: DockerSandbox, path: str) -> None:
    with pytest.raises(SandboxError, match="fix:"):
        docker_sandbox.write_file(path, b"x")
    assert docker_sandbox.exec("test -d /home/agent && echo dir").output.strip() == "dir"


def test_write_file_refuses_non_bytes_and_oversized_payloads(engine_client, base_image) -> None:  # type: ignore[no-untyped-def]
    with DockerSandbox(base_image, run_id="pytest", client=engine_client, limits=SandboxLimits(file_size=1 << 20)) as sandbox:
        with pytest.raises(SandboxError, match="str or bytes"):
            sandbox.write_file("/home/agent/n.txt", 12345)  # type: ignore[arg-type]
        with pytest.raises(SandboxError, match="per-file limit"):
            sandbox.write_file("/home/agent/big.bin", b"x" * ((1 << 20) + 1))
        assert sandbox.exec("test -e /home/agent/big.bin && echo there || echo absent").output.strip() == "absent"
        sandbox.write_file("/home/agent/ok.bin", bytearray(b"y" * (1 << 20)))
        assert sandbox.read_file("/home/agent/ok.bin") == b"y" * (1 << 20)


def test_files_are_written_and_read_as_the_sandbox_user(docker_sandbox: DockerSandbox) -> None:
    with pytest.raises(SandboxError):
        docker_sandbox.write_file("/etc/passwd", "root::0:0::/root:/bin/sh\n")
    assert docker_sandbox.exec("head -c 5 /etc/passwd").output == "root:"
    assert "root::0:0" not in docker_sandbox.exec("cat /etc/passwd").output
    with pytest.raises(SandboxError, match="not readable by the sandbox user"):
        docker_sandbox.read_file("/etc/shadow")


def test_read_file_streams_with_a_size_cap(docker_sandbox: DockerSandbox) -> None:
    docker_sandbox.exec("head -c 3000000 /dev/zero > /home/agent/three-mb")
    with pytest.raises(SandboxError, match="larger than max_bytes"):
        docker_sandbox.read_file("/home/agent/three-mb", max_bytes=1 << 20)
    assert len(docker_sandbox.read_file("/home/agent/three-mb", max_bytes=4 << 20)) == 3000000
    with pytest.raises(SandboxError, match="max_bytes must be a positive"):
        docker_sandbox.read_file("/home/agent/three-mb", max_bytes=0)
