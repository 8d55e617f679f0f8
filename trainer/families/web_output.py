"""What a policy's answer to a web prompt becomes: the files of a page (or of a small project) and an
optional build command, read from the text as models write it.

- One ```html block (or an unfenced `<!doctype html>` / `<html>` document) is `index.html`.
- Several files: each fenced block names its path in the info string (```js app.js, ```css title=style.css)
  or on the line just before the fence (**app.js**, `style.css`:, ### File: app.js).
- A ```build block holds one shell command run in the grading sandbox (no network) before serving, for
  a project that generates its page (e.g. `python3 gen.py`); what is served is `dist/` when the build made
  one, else the project's root. A page that is served by its own long-running server is not supported:
  the browser never gets a route into the sandbox. Any other block without a path (a ```start or ```bash
  block, an example) is not a file: the project is served statically, so a page that needs its own server
  fails verification on its own merits.
- A fence left open (the answer ran out of tokens) ends at the end of the text: the page is graded as cut.

Every byte here is policy-written: paths must be relative, plain (letters, digits, `._-/`), at most 4 deep,
with no `..` and no hidden names; at most 32 files and 1 MiB. Anything else is a `problem`: the rollout
earns 0 and the reason is recorded, which is the policy's doing, not an infrastructure failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

MAX_FILES = 32
MAX_BYTES = 1 << 20
MAX_DEPTH = 4
BUILD_INFO = "build"

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\n`]*)\n", re.M)
_PATH_CHARS = re.compile(r"^[A-Za-z0-9._/-]+$")
_PATH_LIKE = re.compile(r"[^\s:]*\.[A-Za-z0-9]{1,8}")  # a word that ends in an extension
_DOCUMENT = re.compile(r"(<!doctype html.*?</html>|<html[\s>].*?</html>)", re.I | re.S)


@dataclass
class WebOutput:
    files: dict[str, str] = field(default_factory=dict)
    build: str = ""
    problem: str = ""  # why no page could be read ("" when files holds one)

    @property
    def ok(self) -> bool:
        return not self.problem


@dataclass
class _Block:
    info: str
    body: str
    before: str  # the last non-empty line before the fence


def _blocks(text: str) -> list[_Block]:
    out: list[_Block] = []
    pos = 0
    while True:
        m = _FENCE.search(text, pos)
        if not m:
            return out
        fence, info = m.group(1), m.group(2).strip()
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", re.M)
        end = close.search(text, m.end())
        body = text[m.end():end.start()] if end else text[m.end():]
        before = next((ln.strip() for ln in reversed(text[:m.start()].splitlines()) if ln.strip()), "")
        out.append(_Block(info, body, before))
        if not end:
            return out
        pos = end.end()


def _named_path(block: _Block) -> str:
    """A path named in the info string (after the language, or as title=/file=) or alone on the line before.
    Returned as written: `check_path` refuses the unsafe ones by name rather than dropping them."""
    words = block.info.replace("title=", " ").replace("file=", " ").replace('"', " ").replace("'", " ").split()
    for word in words[1:] if len(words) > 1 else words:
        if _PATH_LIKE.fullmatch(word):
            return word
    line = block.before.strip("*#`:_ ")
    line = re.sub(r"^(?:file|filename|path)\s*:?\s*", "", line, flags=re.I).strip("*#`:_ ")
    return line if len(line) <= 200 and _PATH_LIKE.fullmatch(line) else ""


def check_path(path: str) -> str:
    """'' when `path` is a safe relative file path, else why not."""
    p = PurePosixPath(path)
    if not path or not _PATH_CHARS.match(path):
        return f"file name {path[:80]!r} has characters outside letters, digits and ._-/"
    if p.is_absolute() or ".." in p.parts or any(part.startswith(".") for part in p.parts):
        return f"file name {path[:80]!r} is absolute, climbs out with .., or is hidden"
    if len(p.parts) > MAX_DEPTH:
        return f"file name {path[:80]!r} is more than {MAX_DEPTH} folders deep"
    return ""


def extract(text: str) -> WebOutput:
    blocks = _blocks(text)
    out = WebOutput()
    unnamed_html = [b for b in blocks if not _named_path(b) and b.info.split()[:1] in (["html"], ["htm"])]
    for block in blocks:
        lang = (block.info.split() or [""])[0].lower()
        if lang == BUILD_INFO:
            if out.build:
                return WebOutput(problem="the answer has more than one ```build block")
            out.build = " ".join(block.body.split())
            continue
        path = _named_path(block)
        if not path and block is (unnamed_html[0] if unnamed_html else None):
            path = "index.html"
        if not path:
            continue  # an example, a shell transcript: not a file of the page
        if path in out.files:
            return WebOutput(problem=f"the answer gives {path} twice")
        out.files[path] = block.body
    if not out.files:
        doc = _DOCUMENT.search(text)
        if doc is None:
            return WebOutput(problem="the answer holds no ```html block and no <html> document")
        out.files["index.html"] = doc.group(1)
    for path in out.files:
        problem = check_path(path)
        if problem:
            return WebOutput(problem=problem)
    if len(out.files) > MAX_FILES:
        return WebOutput(problem=f"the answer has {len(out.files)} files, over {MAX_FILES}")
    size = sum(len(body.encode()) for body in out.files.values())
    if size > MAX_BYTES:
        return WebOutput(problem=f"the answer's files hold {size} bytes, over {MAX_BYTES}")
    if "index.html" not in out.files and not out.build:
        return WebOutput(problem=f"the answer has no index.html (files: {', '.join(sorted(out.files))[:200]})")
    return out
