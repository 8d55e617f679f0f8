"""Turn raw runner output into clean lines: bytes of any encoding, ANSI colours, carriage returns."""

from __future__ import annotations

import re

# CSI sequences (colours, cursor moves) and OSC sequences (terminal titles, hyperlinks).
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def decode(raw: bytes | str) -> tuple[str, int]:
    """Decode as UTF-8, replacing bad bytes; return the text and how many bytes were replaced."""
    if isinstance(raw, str):
        return raw, 0
    text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - raw.count("\ufffd".encode())
    return text, max(bad, 0)


def clean_lines(raw: bytes | str) -> tuple[list[str], list[str]]:
    """Lines without colour codes or trailing whitespace, plus problems worth reporting."""
    text, bad = decode(raw)
    problems = [f"{bad} undecodable byte(s) replaced"] if bad else []
    text = _ANSI.sub("", text).replace("\r\n", "\n")
    lines = []
    for line in text.split("\n"):
        if "\r" in line:  # progress redraws: only the last state of the line was visible
            line = line.rsplit("\r", 1)[-1] or line.replace("\r", "")
        lines.append(line.rstrip())
    return lines, problems


WORKDIRS = ("/testbed/",)  # where envfarm's images hold the repository


def repo_path(path: str) -> str:
    """A path as the runner printed it, made relative to the repository (runners print absolute paths)."""
    for prefix in WORKDIRS:
        if path.startswith(prefix):
            return path[len(prefix):]
    return path


MAX_REPORT_BYTES = 32 << 20  # no honest report for one task is larger


def report_bytes(raw: bytes | str, problems: list[str]) -> bytes | None:
    """A report's bytes, or None (with the problem noted) when it is over `MAX_REPORT_BYTES`: not parsed."""
    data = raw.encode("utf-8", errors="replace") if isinstance(raw, str) else bytes(raw)
    if len(data) > MAX_REPORT_BYTES:
        problems.append(f"report is {len(data)} bytes, over the {MAX_REPORT_BYTES} read: not parsed")
        return None
    return data
