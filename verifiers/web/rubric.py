"""A task's rubric in plain words, split into requirements, each matched to the deterministic check
that covers it, or to none (then the judge covers it).

    rubric: |
      A cube spins on its own.
      Clicking "make it red" turns it red.
      The page feels polished.

reads as three requirements: "animates on its own", "a click changes the page", and one left to the
judge. Matching is by words, on purpose simple and predictable: a requirement names an action (press a
key, type, click, drag or draw, hover, scroll) or a property the explorer measures (moving on its own,
a chart or 3D scene drawn). The first rule that matches wins, in the order below, so "the board
animates when you click" is a click requirement, not an animation one, and "clicking a cell paints it"
a click one, not a drawing one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# (check name, pattern). Order matters: actions before properties.
RULES: tuple[tuple[str, str], ...] = (
    ("text_changes", r"\b(types? (itself|themselves)|letter by letter|typewriter|counts? (down|up) by itself)"),  # text the page rewrites alone
    ("animates", r"\b(on (its|their) own|by (itself|themselves))\b"),
    ("keyboard", r"\b(arrow[- ]?keys?|keyboard|key ?press|press(es|ing)? (the )?(space|a key|any key|keys?|w|a|s|d)\b|spacebar|space bar|wasd|keys\b)"),
    ("type", r"\b(typ(e|es|ing)|enter(s|ing)? (a|an|the|some|your)|input|form|submit\w*|search(es|ing)?|fill\w* in|text ?field|todo|to-do)"),
    ("click", r"\b(click\w*|tap\w*|slid\w*|dropdown|checkbox\w*|press(es|ing)? (the |a )?\w*\s*button|button\w*|toggl\w*|select\w*|tabs?\b|switch\w*|choos\w*)"),
    ("drag", r"\b(drag\w*|draw(s|ing)?\b|paint(s|ing)?\b|sketch(es|ing)?\b|doodl\w*)"),
    ("hover", r"\b(hover\w*|mouse ?over|tooltip\w*)"),
    ("scroll", r"\b(scroll\w*|parallax)"),
    ("animates", r"\b(animat\w*|spin\w*|swirl\w*|glow\w*|shimmer\w*|blink\w*|rotat\w*|mov(e|es|ing)\b|bounc\w*|orbit\w*|twinkl\w*|puls\w*|flow\w*|drift\w*|float\w*|fall\w*|wav(e|es|ing)\b|flicker\w*|sway\w*|ticks?\b|loops?\b|continuous\w*)"),
    ("drawn", r"\b(chart\w*|graph\w*|plot\w*|3d|three\.?js|webgl|voxel\w*|scene|canvas|svg|illustrat\w*|diagram\w*)"),
)
CHECKS = tuple(name for name, _ in RULES)


@dataclass
class Requirement:
    text: str
    check: str | None  # one of CHECKS, or None: not deterministic, the judge's


def requirements(rubric: str | list[str] | None) -> list[Requirement]:
    """One requirement per line (or per sentence of a line), each with the check that covers it."""
    if not rubric:
        return []
    lines = rubric if isinstance(rubric, list) else rubric.splitlines()
    out = []
    for line in lines:
        for sentence in re.split(r"(?<=[.!?])\s+", str(line).strip(" -*\t")):
            text = sentence.strip()
            if text:
                out.append(Requirement(text, match(text)))
    return out


def match(text: str) -> str | None:
    """The first rule whose words the requirement uses; a requirement that names a control in quotes
    ("Clear" wipes the canvas) and no other action is about pressing that control."""
    lowered = text.lower()
    found = next((name for name, pattern in RULES if re.search(pattern, lowered)), None)
    if found in (None, "animates", "drawn") and re.search(r'["“][^"”]{2,40}["”]', text):
        return "click"
    return found
