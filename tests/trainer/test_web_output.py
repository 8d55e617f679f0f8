"""Reading a page out of a policy's answer: the forms models write, and every hostile shape refused by name."""

from __future__ import annotations

import pytest

from envfarm.trainer.families.web_output import MAX_BYTES, extract

PAGE = "<!doctype html>\n<html><body><p>hi</p></body></html>"


@pytest.mark.parametrize("text", [
    f"Here is the page:\n```html\n{PAGE}\n```\nEnjoy.",
    f"```HTML\n{PAGE}\n```",
    f"~~~html\n{PAGE}\n~~~",
    f"Sure! {PAGE} That is all.",
    f"```html\n{PAGE}",  # ran out of tokens before the closing fence: graded as cut
])
def test_one_page(text):
    out = extract(text)
    assert out.ok and list(out.files) == ["index.html"] and out.files["index.html"].startswith("<!doctype html>") and not out.build


def test_a_small_project_with_paths_in_every_form_and_a_build():
    text = (
        "```html index.html\n<script src=app.js></script>\n```\n"
        "**src/app.js**\n```js\nconsole.log(1)\n```\n"
        "`style.css`:\n```css\nbody{}\n```\n"
        "```js title=\"lib/util.js\"\nexport {}\n```\n"
        "```bash\nnpm start  # an example, not a file\n```\n"
        "```build\npython3 gen.py\n```\n"
        "### File: gen.py\n```python\nprint(1)\n```\n"
    )
    out = extract(text)
    assert out.ok, out.problem
    assert sorted(out.files) == ["gen.py", "index.html", "lib/util.js", "src/app.js", "style.css"]
    assert out.files["src/app.js"] == "console.log(1)\n" and out.build == "python3 gen.py"


def test_a_build_may_make_the_index():
    out = extract("```python gen.py\nopen('dist/index.html','w').write('x')\n```\n```build\nmkdir -p dist && python3 gen.py\n```")
    assert out.ok and out.build and "index.html" not in out.files


@pytest.mark.parametrize("text, problem", [
    ("I can't write web pages.", "no ```html block and no <html> document"),
    ("```js app.js\nx\n```", "has no index.html"),
    ("```html ../../etc/index.html\nx\n```", "climbs out"),
    ("```html /etc/index.html\nx\n```", "is absolute"),
    ("```html i$(rm)ndex.html\nx\n```", "characters outside"),
    ("```html .hidden/index.html\nx\n```", "climbs out"),
    ("```html a/b/c/d/e/index.html\nx\n```", "more than 4 folders deep"),
    ("```html index.html\nx\n```\n```html index.html\ny\n```", "gives index.html twice"),
    ("```build\nmake\n```\n```build\nmake\n```", "more than one ```build"),
    ("".join(f"```js f{i}.js\nx\n```\n" for i in range(40)) + f"```html\n{PAGE}\n```", "41 files"),
    (f"```html\n{'x' * (MAX_BYTES + 1)}\n```", "bytes, over"),
])
def test_hostile_or_useless_answers_are_named(text, problem):
    out = extract(text)
    assert not out.ok and problem in out.problem, out.problem
