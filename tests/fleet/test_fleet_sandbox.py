"""KubernetesSandbox's exec protocol handling, with a transport that runs the exact argv it would send
to the exec API as a local process (no cluster here): timeouts kill the process tree, output is
capped, env/workdir apply, files round-trip through tar."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from envfarm.errors import SandboxError
from fleet_local_exec import LocalExec
from envfarm.sandbox.kubernetes import KubernetesSandbox, OutputCollector, tar_one_file, untar_one_file, wrap_command
from envfarm.sandbox.protocol import Sandbox

pytestmark = pytest.mark.skipif(not (shutil.which("timeout") and shutil.which("tar")), reason="coreutils timeout and tar needed")


@pytest.fixture()
def sandbox(tmp_path: Path) -> KubernetesSandbox:
    def stream(fn: Any, name: str, namespace: str, command: list[str], **kwargs: Any) -> LocalExec:
        return LocalExec(command, tmp_path)

    return KubernetesSandbox(api_client=None, namespace="ns", pod="p", workdir=str(tmp_path), stream_fn=stream)


def test_it_is_a_sandbox(sandbox: KubernetesSandbox) -> None:
    assert isinstance(sandbox, Sandbox)


def test_exit_code_output_env_and_workdir(sandbox: KubernetesSandbox, tmp_path: Path) -> None:
    result = sandbox.exec("echo $GREETING; pwd; echo err >&2; exit 3", env={"GREETING": "hi there"})
    assert result.exit_code == 3 and not result.timed_out
    assert result.output.splitlines()[:2] == ["hi there", str(tmp_path)] and "err" in result.output


def test_timeout_kills_the_whole_process_tree(sandbox: KubernetesSandbox, tmp_path: Path) -> None:
    result = sandbox.exec(f"(sleep 30; touch {tmp_path}/survived) & sleep 30", timeout=1)
    assert result.timed_out and result.exit_code == 124
    subprocess.run(["sleep", "0.5"])
    assert not (tmp_path / "survived").exists()


def test_output_is_capped_with_the_marker(sandbox: KubernetesSandbox) -> None:
    result = sandbox.exec("head -c 100000 /dev/zero | tr '\\0' x", output_limit=1000)
    assert result.truncated and result.output.startswith("x" * 1000) and "truncated at 1000 bytes" in result.output


def test_files_round_trip_through_tar(sandbox: KubernetesSandbox, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 100
    sandbox.write_file("/sub/data.bin", payload, mode=0o600)
    assert (tmp_path / "sub" / "data.bin").read_bytes() == payload
    assert sandbox.read_file("/sub/data.bin") == payload
    with pytest.raises(SandboxError, match="fix:"):
        sandbox.read_file("/missing")


def test_closed_sandbox_refuses_work(sandbox: KubernetesSandbox) -> None:
    sandbox.close()
    with pytest.raises(SandboxError, match="closed"):
        sandbox.exec("true")


def test_pure_helpers() -> None:
    argv = wrap_command(["echo", "a b"], 2.4, "/testbed", {"K": "v w"})
    assert argv[:4] == ["timeout", "-k", "2", "2"] and argv[-1] == "export K='v w'; cd /testbed && echo 'a b'"
    assert untar_one_file(tar_one_file("/x/y", b"abc", 0o644), "/x/y") == b"abc"
    collector = OutputCollector(3)
    collector.add(b"abcdef")
    assert collector.truncated and collector.text().startswith("abc")


# -- API edges (issue #13): checked before anything runs, one SandboxError with the fix -------------------
@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 1e12, 0, -1, True, "5"])
def test_bad_timeouts_are_refused_before_the_command_starts(sandbox: KubernetesSandbox, tmp_path: Path, timeout: Any) -> None:
    with pytest.raises(SandboxError, match="timeout must be a positive number.*fix:"):
        sandbox.exec(f"touch {tmp_path}/ran", timeout=timeout)
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("path", ["", "   ", "/sub/", "/sub/.", "."])
def test_write_file_refuses_paths_that_name_no_file(sandbox: KubernetesSandbox, tmp_path: Path, path: str) -> None:
    (tmp_path / "sub").mkdir()
    with pytest.raises(SandboxError, match="fix:"):
        sandbox.write_file(path, b"x")
    assert (tmp_path / "sub").is_dir()


def test_write_file_refuses_non_bytes_payloads(sandbox: KubernetesSandbox) -> None:
    with pytest.raises(SandboxError, match="str or bytes"):
        sandbox.write_file("/a.txt", 12345)  # type: ignore[arg-type]


def test_read_file_is_capped_and_refuses_directories(sandbox: KubernetesSandbox, tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"z" * (512 << 10))
    with pytest.raises(SandboxError, match="larger than max_bytes"):
        sandbox.read_file("/big.bin", max_bytes=64 << 10)
    assert sandbox.read_file("/big.bin", max_bytes=1 << 20) == b"z" * (512 << 10)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "inside.txt").write_text("not me")
    with pytest.raises(SandboxError, match="is a directory"):
        sandbox.read_file("/d")
