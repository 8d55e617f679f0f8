"""Text files a user hands envfarm (run configs, image recipes, repository lists, interaction scripts): each way
reading one can fail is one EnvfarmError naming the file, so every command reports a bad file the same way."""

from __future__ import annotations

from pathlib import Path

import yaml

from envfarm.errors import EnvfarmError


def read_text(path: str | Path, what: str, fix: str) -> str:
    """The file's text (UTF-8, a BOM allowed). `what` names it to the user ("config file", "recipe"...);
    `fix` is what to do when it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise EnvfarmError(f"cannot read {what} {path}: it does not exist", fix)
    if not path.is_file():
        raise EnvfarmError(f"cannot read {what} {path}: it is not a file", fix)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EnvfarmError(f"cannot read {what} {path}: {exc.strerror or exc}", "check the path and its permissions") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        utf16 = raw[:2] in (b"\xff\xfe", b"\xfe\xff") or raw[1:200:2].count(0) > 40
        line = raw[:exc.start].count(b"\n") + 1
        encoding = "UTF-16" if utf16 else "not UTF-8"
        raise EnvfarmError(f"cannot read {what} {path}: it is {encoding} text (byte {raw[exc.start]:#04x} on line {line})",
                           f"save the {what} as UTF-8") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong with a YAML text and where, for one line of an error."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    return (getattr(exc, "problem", None) or " ".join(str(exc).split())[:200]) + where


def load_yaml(path: str | Path, what: str, fix: str) -> object:
    """The file parsed as YAML; unreadable, not UTF-8, bad YAML or empty: one EnvfarmError each."""
    text = read_text(path, what, fix)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EnvfarmError(f"{what} {path} is not valid YAML: {yaml_problem(exc)}", "fix the YAML syntax") from None
    if data is None:
        raise EnvfarmError(f"{what} {path} is empty", fix)
    return data
