"""Drive an unknown page the way a careful user would, with no script: the explorer's session.

Wait for the page to load, watch it idle (what moves and what the DOM does on its own), find what a
person could interact with (buttons, links, inputs, selects, sliders, checkboxes, canvases, elements
with handlers, draggable items, keyboard and scroll listeners) and try each within a time budget:
click, type plausible text and press Enter, pick another option, press arrows and space, drag across
canvases, hover, scroll. For every interaction the session writes down when it started and when its
effect had settled (session clock), how many DOM mutations it caused outside the nodes that change on
their own, the errors it raised, and a keyframe taken once it settled. Pixel changes are read later from
the video (explorer.py), per region, outside the areas that animate by themselves.

Handlers are found by wrapping `EventTarget.prototype.addEventListener` before any page script runs (an
init script) and by reading `on*` properties and attributes: listeners leave no other trace a page can
see. Elements alike (same parent, tag, class and handlers: the 256 cells of a paint board) form one
control, judged by its first members. Controls that did nothing are tried once more after all others,
because state matters ("clear" does nothing on an empty board, "previous" on the first slide).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page

from envfarm.verifiers.web.browser import BrowserHost
from envfarm.verifiers.web.cdn import CdnShim
from envfarm.verifiers.web.runner import TWO_FRAMES_JS, LivePage, SessionRecord, recorded_page, screenshot, settle


@dataclass
class ExploreOptions:
    """How long and how hard the explorer tries. The viewport is a small laptop window's (software WebGL
    draws every pixel on the CPU, so a bigger one slows every frame); layout broken at it is a failure."""

    viewport: dict[str, int] = field(default_factory=lambda: {"width": 800, "height": 560})
    load_timeout_ms: int = 10_000
    idle_ms: int = 1500  # watched with no input, before any interaction: what animates on its own
    budget_s: float = 30.0  # for all interactions together; the rest are left untried (and said so)
    action_timeout_ms: int = 3000  # one click, fill or drag, actionability waits included (a software-rendered scene is slow to hold still)
    settle_ms: int = 1000  # bound on waiting for an interaction's effect to settle
    gap_ms: int = 250  # after each interaction, before the next: the video's window for its effect
    max_controls: int = 24  # distinct controls tried (a group of look-alike elements counts once)
    per_group: int = 2  # members of a look-alike group tried before the group is judged dead
    keyframes: bool = True

    @property
    def session_timeout_s(self) -> float:
        return self.load_timeout_ms / 1000 + self.idle_ms / 1000 + self.budget_s + 20


@dataclass
class Control:
    id: int
    kind: str  # button | link | input | field | select | range | checkbox | canvas | handler | draggable | hover | keyboard | scroll
    label: str
    path: str  # a CSS path to the element ("window" for keyboard and scroll listeners)
    box: list[int]
    group: str
    handlers: list[str] = field(default_factory=list)
    type: str = ""
    href: str = ""
    in_form: bool = False
    buttonish: bool = False  # a button, link, checkbox or the like: its own restyling is not an effect
    min: str = ""
    max: str = ""
    parent: str = ""  # the parent's CSS path: siblings restyle together (tabs, segmented buttons)


@dataclass
class Interaction:
    index: int
    control: int
    target: str  # the control's CSS path, or "keyboard" / "page"
    kind: str
    action: str
    label: str
    attempt: int = 1  # 2: retried after every other control had its turn
    started_s: float = 0.0  # session clock, after the pointer was on the target and the page settled
    acted_s: float = 0.0  # the action returned
    settled_s: float = 0.0  # the effect had settled (see runner.settle)
    window_end_s: float = 0.0  # the next interaction starts after this
    dom_changes: int = 0  # mutations outside the nodes that change on their own; 0 when the DOM reads as before
    text_changed: bool = False  # text or a field value changed (not the acted-on field's own)
    attrs_changed: bool = False  # a class, style or other attribute changed (an effect only if pixels show it)
    uncovered: str = ""  # what the explorer did to reach a target something else covered
    navigated: bool = False  # the page reloaded or went to another URL
    scrolled: bool = False
    ok: bool = True  # the action could be performed (not covered, not off screen, no time-out)
    error: str = ""
    errors: list[str] = field(default_factory=list)  # uncaught exceptions and console errors raised meanwhile
    box: list[int] = field(default_factory=list)  # the target's box when acted on (viewport pixels)
    keyframe: str = ""
    keyframe_s: float | None = None


@dataclass
class ExplorationRecord(SessionRecord):
    loaded: bool = False
    load_s: float = 0.0
    idle: tuple[float, float] = (0.0, 0.0)  # session clock
    self_mutations: int = 0  # DOM mutations during the idle watch
    controls: list[Control] = field(default_factory=list)
    interactions: list[Interaction] = field(default_factory=list)
    untried: list[str] = field(default_factory=list)  # controls the budget left untried
    skipped: list[str] = field(default_factory=list)  # links that leave the page, and why
    media_boxes: list[list[int]] = field(default_factory=list)  # canvas, svg, video, img boxes
    responsive: bool = True
    hang: str = ""
    webgl: dict[str, Any] = field(default_factory=dict)
    load_keyframe: str = ""
    load_keyframe_s: float | None = None


# Runs before any page script, in every document of the context.
INSTRUMENT_JS = r"""(() => {
  if (window.__envfarm) return;
  const E = window.__envfarm = { handlers: new WeakMap(), global: new Set(), log: [], self: new WeakSet(), errors: 0 };
  const add = EventTarget.prototype.addEventListener;
  EventTarget.prototype.addEventListener = function (type, fn, opts) {
    try {
      if (this === window || this === document || this === document.documentElement || this === document.body) E.global.add(String(type));
      else if (this instanceof Element) { let s = E.handlers.get(this); if (!s) E.handlers.set(this, s = new Set()); s.add(String(type)); }
    } catch (e) {}
    return add.call(this, type, fn, opts);
  };
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === 'attributes' && r.attributeName && r.attributeName.startsWith('data-envfarm')) continue;
      const n = r.target.nodeType === 1 ? r.target : r.target.parentElement;
      if (n && E.log.length < 200000) E.log.push(n);
    }
  }).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
  // What a person could see change: tags, attributes, text, field values and checked states, less the
  // nodes that changed on their own during the idle watch and the acted-on control's own value (typing
  // into a box shows in the box whether or not the page does anything with it). A handler that rewrites
  // the same text leaves the signature as it was.
  E.sig = (own) => {
    const parts = [], attrs = [];
    const walk = (n) => {
      if (n.nodeType === 3) { parts.push(n.data); return; }
      if (n.nodeType !== 1) return;
      if (E.self.has(n) && n !== document.body && n !== document.documentElement) { parts.push('<self>'); return; }
      // What is not shown does not count: a title rewritten inside a dialog that never opens changed nothing.
      if (n.checkVisibility && !n.checkVisibility({ visibilityProperty: true, opacityProperty: true })) { parts.push('<hidden>'); return; }
      parts.push('<' + n.tagName);
      attrs.push('<' + n.tagName);
      // A button's own look (active, pressed, selected, disabled) is not an effect: a segmented control
      // that restyles itself but leaves the chart as it was did nothing. Its text still counts.
      // data-* attributes show nothing by themselves (a CSS rule that styles them shows in the pixels).
      if (!E.buttonish(n)) for (const a of n.attributes) if (!a.name.startsWith('data-')) attrs.push(a.name + '=' + a.value);
      // Values the explorer typed itself are its own doing: a form reset that only clears them did nothing.
      if (n.getAttribute('data-envfarm-c') !== own && !n.hasAttribute('data-envfarm-typed')) {
        if (n.tagName === 'INPUT' || n.tagName === 'TEXTAREA' || n.tagName === 'SELECT') parts.push('v=' + n.value + (n.checked ? '+' : '-'));
      }
      for (const c of n.childNodes) walk(c);
      parts.push('>');
    };
    if (document.body) walk(document.body);
    return { text: parts.join('\u0001'), attrs: attrs.join('\u0001') };
  };
  E.buttonish = (n) => {
    const tag = n.tagName, role = n.getAttribute('role'), type = (n.type || '').toLowerCase();
    return tag === 'BUTTON' || tag === 'A' || tag === 'SUMMARY' || (tag === 'INPUT' && ['button', 'submit', 'reset', 'checkbox', 'radio'].includes(type))
      || ['button', 'tab', 'switch', 'menuitem', 'option', 'checkbox', 'radio'].includes(role);
  };
  E.mark = (own) => { E.own = own == null ? null : String(own); E.snap = E.sig(E.own); return E.log.length; };
  // A node changes on its own when what it shows differs between the start and the end of the idle
  // watch (a clock, a counter a render loop rewrites); one rewritten each frame with the same text does not.
  E.ownSig = (n) => {
    let out = n.tagName;
    for (const a of n.attributes) if (!a.name.startsWith('data-envfarm')) out += '|' + a.name + '=' + a.value;
    for (const c of n.childNodes) if (c.nodeType === 3) out += '|' + c.data;
    if ('value' in n && (n.tagName === 'INPUT' || n.tagName === 'TEXTAREA' || n.tagName === 'SELECT')) out += '|v=' + n.value;
    return out;
  };
  E.startIdle = () => { E.idleSig = new Map(); for (const n of document.querySelectorAll('*')) E.idleSig.set(n, E.ownSig(n)); return E.log.length; };
  E.markSelf = (from) => {
    let c = 0;
    const seen = new Set(E.log.slice(from));
    for (const n of seen) {
      if (!n.isConnected) continue;
      const before = E.idleSig.get(n);
      if (before === undefined || before !== E.ownSig(n)) { E.self.add(n); c++; }
    }
    return c;
  };
  // Text (and field values) that changed is an effect; a changed class or style only if it shows, which
  // the pixels decide (a class no rule styles changes nothing a person sees).
  E.changes = (from) => {
    const now = E.sig(E.own);
    let c = 0; for (let i = from; i < E.log.length; i++) if (!E.self.has(E.log[i])) c++;
    return { text: now.text !== E.snap.text, attrs: now.attrs !== E.snap.attrs, mutations: c };
  };
})();"""

DISCOVER_JS = r"""(start) => {
  const E = window.__envfarm || { handlers: new WeakMap(), global: new Set() };
  const CLICKY = ['click', 'mousedown', 'mouseup', 'pointerdown', 'pointerup', 'dblclick', 'touchstart', 'contextmenu'];
  const KEYS = ['keydown', 'keyup', 'keypress'];
  const PROPS = [...CLICKY, ...KEYS, 'input', 'change', 'mousemove', 'pointermove', 'mouseover', 'mouseenter', 'dragstart', 'drop', 'dragover', 'wheel'];
  const handlersOf = (el) => {
    const s = new Set(E.handlers.get(el) || []);
    for (const t of PROPS) if (typeof el['on' + t] === 'function' || el.hasAttribute('on' + t)) s.add(t);
    return [...s].sort();
  };
  const cssPath = (el) => {
    const parts = [];
    for (let x = el; x && x.nodeType === 1 && x !== document.documentElement; x = x.parentElement) {
      if (x.id) { parts.unshift('#' + CSS.escape(x.id)); break; }
      const same = [...(x.parentElement ? x.parentElement.children : [])].filter((y) => y.tagName === x.tagName);
      parts.unshift(x.tagName.toLowerCase() + (same.length > 1 ? `:nth-of-type(${same.indexOf(x) + 1})` : ''));
    }
    return parts.join(' > ');
  };
  const shown = (el) => {
    const r = el.getBoundingClientRect();
    if (r.width < 2 || r.height < 2) return null;
    const cs = getComputedStyle(el);
    if (cs.visibility === 'hidden' || cs.display === 'none' || Number(cs.opacity) === 0) return null;
    return r;
  };
  const kindOf = (el, h) => {
    const tag = el.tagName.toLowerCase(), type = (el.type || '').toLowerCase(), role = el.getAttribute('role');
    if (tag === 'button' || (tag === 'input' && ['button', 'submit', 'reset', 'image'].includes(type)) || tag === 'summary') return 'button';
    if (tag === 'input' && ['checkbox', 'radio'].includes(type)) return 'checkbox';
    if (tag === 'input' && type === 'range') return 'range';
    if (tag === 'input' && ['hidden', 'file'].includes(type)) return null;
    if (tag === 'input' && ['color', 'date', 'time', 'datetime-local', 'month', 'week'].includes(type)) return 'field';  // a setting used later
    if (tag === 'input' || tag === 'textarea' || (el.isContentEditable && el.hasAttribute('contenteditable'))) return 'input';
    if (tag === 'select') return 'select';
    if (tag === 'a' && el.hasAttribute('href')) return 'link';
    if (tag === 'canvas') return (h.length || [...(E.global || [])].some((t) => /^(mouse|pointer|touch)/.test(t))) ? 'canvas' : null;  // a canvas nothing listens on is a picture
    if (el.getAttribute('draggable') === 'true') return 'draggable';
    if (['button', 'tab', 'link', 'menuitem', 'switch', 'checkbox', 'option', 'slider'].includes(role)) return 'button';
    if (h.some((t) => CLICKY.includes(t))) return 'handler';
    if (h.some((t) => KEYS.includes(t)) && el.tabIndex >= 0) return 'handler';
    if (h.some((t) => ['mouseover', 'mouseenter'].includes(t))) return 'hover';
    return null;
  };
  const OWNING = new Set(['button', 'link', 'checkbox', 'select', 'range', 'input', 'field']);
  const controls = [], owners = [];
  let n = start || 0;
  for (const el of document.querySelectorAll('body *')) {
    const h = handlersOf(el);
    const kind = kindOf(el, h);
    if (!kind || el.disabled || el.readOnly || el.closest('[inert]')) continue;
    if (owners.some((o) => o.contains(el)) && !h.length) continue;  // inside a button or link: that is the control
    const r = shown(el);
    if (!r) continue;
    if (OWNING.has(kind)) owners.push(el);
    const known = el.getAttribute('data-envfarm-c');  // found before: keeps its id
    const id = known !== null ? Number(known) : n++;
    el.setAttribute('data-envfarm-c', String(id));
    const parent = el.parentElement ? cssPath(el.parentElement) : '';
    const label = (el.innerText || el.value || el.getAttribute('aria-label') || '').trim().slice(0, 40);
    const cls = typeof el.className === 'string' ? el.className.trim().split(/\s+/).filter((c) => !/active|selected|current|on$/.test(c)).sort().join('.') : '';
    controls.push({
      id, kind, handlers: h, type: (el.type || '').toLowerCase(), href: el.getAttribute('href') || '',
      label: ((el.getAttribute('aria-label') || el.innerText || el.value || el.placeholder || el.name || el.id || '') + '').trim().replace(/\s+/g, ' ').slice(0, 40),
      path: cssPath(el), box: [r.x, r.y, r.width, r.height].map(Math.round),
      // Look-alikes: same tag, class, handlers and label ("Choose" on every pricing card), or unlabelled
      // siblings (the cells of a board).
      group: `${label ? '' : parent}|${el.tagName}|${cls}|${h.join(',')}|${kind}|${el.type || ''}|${el.id || ''}|${label}`,
      in_form: !!el.closest('form') && ['input', 'field', 'checkbox', 'select', 'range'].includes(kind),
      min: el.getAttribute('min') || '', max: el.getAttribute('max') || '', parent,
      buttonish: !!(window.__envfarm && window.__envfarm.buttonish && window.__envfarm.buttonish(el)),
    });
  }
  const media = [...document.querySelectorAll('canvas, svg, video, img, iframe')].map((el) => shown(el)).filter(Boolean)
    .map((r) => [r.x, r.y, r.width, r.height].map(Math.round));
  const keyTargets = [...document.querySelectorAll('body *')].filter((el) => handlersOf(el).some((t) => KEYS.includes(t)) && shown(el));
  const global = [...(E.global || [])];
  window.__envfarmDiscovered = true;
  return { controls, media, global, keyTargets: keyTargets.map(cssPath),
           size: { scrollWidth: document.documentElement.scrollWidth, innerWidth: innerWidth, scrollHeight: document.documentElement.scrollHeight, innerHeight: innerHeight } };
}"""

WEBGL_JS = r"""() => {
  const gl = document.createElement('canvas').getContext('webgl');
  if (!gl) return { available: false, renderer: '' };
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  return { available: true, renderer: String(info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER)) };
}"""

# Fill the empty fields of the button's form (if any) the way the explorer types: within min/max,
# by type, marked as typed by the explorer.
FILL_FORM_JS = r"""(el, plausible) => {
  const form = el.form || el.closest('form');
  if (!form) return 0;
  let n = 0;
  for (const f of form.querySelectorAll('input, textarea, select')) {
    const type = (f.type || '').toLowerCase();
    if (f.disabled || f.readOnly || ['hidden', 'file', 'button', 'submit', 'reset', 'image', 'range'].includes(type)) continue;
    if (type === 'checkbox' || type === 'radio') { if (f.required && !f.checked) { f.checked = true; n++; } continue; }
    if (f.tagName === 'SELECT') { if (!f.value && f.options.length > 1) { f.selectedIndex = 1; n++; } continue; }
    if (f.value) continue;
    let v = plausible.byType[type] || plausible.fallback;
    if (type === 'number') { const lo = parseFloat(f.min || '0'), hi = parseFloat(f.max || String(lo + 100)); v = String(Math.round((lo + hi) / 2)); }
    f.value = v;
    f.setAttribute('data-envfarm-typed', '1');
    f.dispatchEvent(new Event('input', { bubbles: true }));
    f.dispatchEvent(new Event('change', { bubbles: true }));
    n++;
  }
  return n;
}"""

# The element at the target's centre is not the target (or inside it): returns a path of the cover.
COVERED_JS = r"""(el) => {
  const r = el.getBoundingClientRect();
  const top = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
  if (!top || el.contains(top) || top.contains(el)) return false;
  let cover = top;
  while (cover.parentElement && cover.parentElement !== document.body && getComputedStyle(cover.parentElement).position !== 'static') cover = cover.parentElement;
  cover.setAttribute('data-envfarm-cover', '1');
  return true;
}"""
CLOSE_JS = r"""() => {
  const cover = document.querySelector('[data-envfarm-cover]');
  if (!cover) return false;
  cover.removeAttribute('data-envfarm-cover');
  const words = /^(close|×|✕|x|cancel|ok|okay|got it|dismiss|back|done|continue)$/i;
  const button = [...cover.querySelectorAll('button, [role=button], a, .close')].find((b) => words.test((b.innerText || b.getAttribute('aria-label') || '').trim()) || b.classList.contains('close'));
  if (!button) return false;
  button.click();
  return true;
}"""

STATE_JS = "() => ({ x: scrollX, y: scrollY, url: location.href, fresh: !window.__envfarmDiscovered })"

PLAUSIBLE = {  # input type -> what a person would type
    "email": "ada@example.com", "number": "42", "tel": "555 0100", "url": "https://example.com", "password": "Correct-Horse-9",
    "search": "apple", "date": "2024-05-01", "time": "09:30", "datetime-local": "2024-05-01T09:30", "month": "2024-05",
    "week": "2024-W18", "color": "#3366cc",
}
PLAUSIBLE_BY_NAME = (("mail", "ada@example.com"), ("name", "Ada Lovelace"), ("age", "36"), ("phone", "555 0100"), ("city", "London"),
                     ("amount", "42"), ("price", "42"), ("qty", "3"), ("quantity", "3"), ("zip", "12345"), ("message", "Hello there, this works."))
KEYS = ("ArrowRight", "ArrowUp", "ArrowLeft", " ", "Enter")


def plausible_text(control: Control) -> str:
    if control.type == "number" and (control.min or control.max):
        try:  # inside the field's own bounds, or the browser refuses to submit the form
            low = float(control.min or 0)
            high = float(control.max or low + 100)
            middle = (low + high) / 2
            return str(int(middle)) if middle == int(middle) else str(round(middle, 1))
        except ValueError:
            pass
    if control.type in PLAUSIBLE:
        return PLAUSIBLE[control.type]
    hint = (control.label + " " + control.path).lower()
    return next((text for key, text in PLAUSIBLE_BY_NAME if key in hint), "Buy milk")


class Hang(Exception):
    """The page's main thread stopped answering (an infinite loop after an interaction)."""


async def _bounded(coro: Any, seconds: float) -> Any:
    try:
        return await asyncio.wait_for(coro, timeout=seconds)
    except asyncio.TimeoutError as exc:
        raise Hang(f"no answer within {seconds:.1f}s") from exc


class Explorer:
    """One exploration of one page; `run` fills the record."""

    def __init__(self, live: LivePage, record: ExplorationRecord, options: ExploreOptions) -> None:
        self.page: Page = live.page
        self.live = live
        self.record = record
        self.options = options
        self.deadline = 0.0
        self.next_id = 0

    def now(self) -> float:
        return round(time.monotonic() - self.live.t0, 3)

    async def _state(self) -> dict[str, Any]:
        return await _bounded(self.page.evaluate(STATE_JS), 3.0)

    async def _mark(self, own: int | None = None) -> int:
        return int(await _bounded(self.page.evaluate("(own) => window.__envfarm ? window.__envfarm.mark(own) : 0", own), 3.0))

    async def _changes(self, since: int) -> dict[str, Any]:
        found = await _bounded(self.page.evaluate("(m) => window.__envfarm ? window.__envfarm.changes(m) : null", since), 3.0)
        return found or {"text": False, "attrs": False, "mutations": 0}

    async def _settle(self) -> None:
        await _bounded(settle(self.page, self.live.in_flight, self.options.settle_ms), self.options.settle_ms / 1000 + 2)

    async def load(self) -> bool:
        rec, opts = self.record, self.options
        start = time.monotonic()
        try:
            await self.page.goto(rec.origin + "/", timeout=opts.load_timeout_ms, wait_until="load")
        except PlaywrightError as exc:
            rec.hang = f"the page did not load within {opts.load_timeout_ms / 1000:.0f}s: {(str(exc).splitlines() or [''])[0][:200]}"
            return False
        rec.load_s = round(time.monotonic() - start, 3)
        await self._settle()
        rec.loaded = True
        rec.webgl = await _bounded(self.page.evaluate(WEBGL_JS), 5.0)
        # The idle watch: nothing touches the page; what moves now moves on its own.
        mark = int(await _bounded(self.page.evaluate("() => window.__envfarm ? window.__envfarm.startIdle() : 0"), 5.0))
        t_idle = self.now()
        await self.page.wait_for_timeout(opts.idle_ms)
        rec.idle = (t_idle, self.now())
        rec.self_mutations = int(await _bounded(self.page.evaluate("(m) => window.__envfarm ? window.__envfarm.markSelf(m) : 0", mark), 3.0))
        if opts.keyframes:
            path = self.live.keyframes / "loaded.png"
            taken = await screenshot(self.page, path, self.live.t0, opts.settle_ms)
            if taken is not None:
                rec.load_keyframe, rec.load_keyframe_s = str(path), taken
        return True

    async def discover(self) -> list[Control]:
        """Every control on the page now; ids of controls found before are kept (new ones get new ids)."""
        found = await _bounded(self.page.evaluate(DISCOVER_JS, self.next_id), 5.0)
        rec = self.record
        rec.media_boxes = found["media"]
        rec.overflow = found["size"]
        controls = [Control(**c) for c in found["controls"]]
        next_id = max([self.next_id - 1, *(c.id for c in controls)]) + 1
        key_events = {"keydown", "keyup", "keypress"}
        if key_events & set(found["global"]) or found["keyTargets"]:
            target = found["keyTargets"][0] if found["keyTargets"] and not key_events & set(found["global"]) else "body"
            controls.append(Control(next_id, "keyboard", "arrow keys, space, enter", target, [], "keyboard", sorted(key_events & set(found["global"]))))
            next_id += 1
        size = found["size"]
        if {"scroll", "wheel"} & set(found["global"]) or size["scrollHeight"] > size["innerHeight"] + 100:
            controls.append(Control(next_id, "scroll", "scroll the page", "window", [], "scroll", sorted({"scroll", "wheel"} & set(found["global"]))))
            next_id += 1
        self.next_id = next_id
        return controls

    def _pick(self, controls: list[Control]) -> list[Control]:
        """Form fields are filled on the way to their submit button (not judged alone unless they have
        handlers of their own); look-alike elements count as one control."""
        seen: dict[str, int] = {}
        picked = []
        for c in controls:
            if c.kind in ("input", "select", "checkbox", "range") and not {"input", "change", "keyup", "keydown", "keypress", "click"} & set(c.handlers) \
                    and (c.in_form or c.kind == "input"):
                c.kind = "field"  # a value something else reads (the form's submit, a Calculate button)
            n = seen.get(c.group, 0)
            seen[c.group] = n + 1
            if n < self.options.per_group:
                picked.append(c)
        return picked

    async def run(self) -> None:
        opts, rec = self.options, self.record
        if not await self.load():
            return
        controls = self._pick(await self.discover())
        rec.controls = controls
        self.deadline = time.monotonic() + opts.budget_s
        distinct: list[str] = []
        queue = []
        for c in controls:
            if c.group not in distinct:
                if len(distinct) >= opts.max_controls:
                    rec.untried.append(f"{c.kind} {c.label or c.path}: over the limit of {opts.max_controls} controls")
                    continue
                distinct.append(c.group)
            queue.append(c)
        live_groups: set[str] = set()
        retry: list[Control] = []
        for attempt in (1, 2):
            if attempt == 2:
                # Controls the first pass revealed (the "Next question" an answer shows) get their turn.
                fresh = [c for c in self._pick(await self.discover()) if c.group not in distinct and c.group not in live_groups]
                for c in fresh:
                    if len(distinct) < opts.max_controls:
                        distinct.append(c.group)
                        rec.controls.append(c)
                        retry.append(c)
            todo = queue if attempt == 1 else retry
            for c in todo:
                if attempt == 1 and c.group in live_groups:
                    continue  # a look-alike already did something: the group works
                if time.monotonic() > self.deadline:
                    rec.untried.append(f"{c.kind} {c.label or c.path}: the {opts.budget_s:.0f}s budget ran out")
                    continue
                effect = await self.interact(c, attempt)
                if effect is None:
                    continue
                if effect:
                    live_groups.add(c.group)
                elif attempt == 1 and c.kind not in ("field", "canvas", "keyboard", "scroll", "draggable") and c not in retry:
                    retry.append(c)  # state may have been in the way: tried again once all others had their turn
            retry = [c for c in retry if c.group not in live_groups]

    async def interact(self, control: Control, attempt: int) -> bool | None:
        """Perform one interaction; True when the DOM changed (pixels are judged later), None when skipped."""
        rec, opts, page = self.record, self.options, self.page
        if control.kind == "link" and not control.handlers:
            why = _link_skip(control.href, rec.origin)
            if why:
                rec.skipped.append(f"link {control.label or control.href}: {why}")
                return None
        item = Interaction(len(rec.interactions), control.id, control.path, control.kind, _action_name(control), control.label, attempt)
        rec.interactions.append(item)
        errors_before = (len(rec.page_errors), len(rec.console_errors))
        selector = f'[data-envfarm-c="{control.id}"]'
        timeout = opts.action_timeout_ms
        try:
            state = await self._state()
            if state["fresh"]:  # an earlier interaction reloaded the page: find the controls again
                await self.discover()
            locator = page.locator(selector).first if control.kind not in ("keyboard", "scroll") else None
            if locator is not None and await locator.count() == 0:
                rec.interactions.pop()
                rec.skipped.append(f"{control.kind} {control.label or control.path}: no longer on the page")
                return None
            if locator is not None and not await locator.is_visible():
                rec.interactions.pop()  # hidden again (the dialog it was in was closed another way)
                rec.skipped.append(f"{control.kind} {control.label or control.path}: hidden when its turn came")
                return None
            if locator is not None and control.kind in ("button", "checkbox", "input", "select", "range") and await locator.is_disabled(timeout=timeout):
                rec.interactions.pop()  # a disabled control is not tried, as a person would not (a quiz after its answer)
                rec.skipped.append(f"{control.kind} {control.label or control.path}: disabled when its turn came")
                return None
            if locator is not None and control.kind != "hover":
                item.uncovered = await self._uncover(locator, timeout)
                if item.uncovered.startswith("reloaded"):
                    locator = page.locator(selector).first
            # The pointer goes to the target first and the page settles, so a hover style is in the
            # "before" frame and not counted as the click's effect.
            if control.kind == "hover":
                await page.mouse.move(1, 1)
            elif locator is not None:
                await locator.scroll_into_view_if_needed(timeout=timeout * 3)
                box = await locator.bounding_box(timeout=timeout * 3)
                if box is None:
                    raise PlaywrightError("the element has no box (hidden or detached)")
                item.box = [round(box["x"]), round(box["y"]), round(box["width"]), round(box["height"])]
                if control.kind not in ("field", "input", "range", "select"):
                    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            # What leaving the last target set off (a tooltip fading, a hover transition) ends before "before".
            await page.wait_for_timeout(opts.gap_ms)
            await _bounded(page.evaluate(TWO_FRAMES_JS), 5.0)
            state = await self._state()
            mark = await self._mark(control.id)
            item.started_s = self.now()
            try:
                await asyncio.wait_for(self._act(control, locator, timeout), timeout / 1000 * 4 + 2)
            except asyncio.TimeoutError:
                # Slow (a software-rendered scene answering each input a frame later) or hung: ask.
                await _bounded(self.page.evaluate("1"), 5.0)
                raise PlaywrightError(f"{item.action} did not finish within {timeout / 1000 * 4 + 2:.1f}s") from None
            item.acted_s = self.now()
            await self._settle()
            item.settled_s = self.now()
            after = await self._state()
            # Another page is an effect; the same page loaded again (a form with no submit handler sent
            # as a GET to itself) is a reset, judged by what it shows.
            item.navigated = after["url"].split("?")[0].split("#")[0] != state["url"].split("?")[0].split("#")[0]
            item.scrolled = (after["x"], after["y"]) != (state["x"], state["y"])
            if not after["fresh"]:
                changes = await self._changes(mark)
                item.text_changed, item.attrs_changed = bool(changes["text"]), bool(changes["attrs"])
                item.dom_changes = int(changes["mutations"]) if item.text_changed or item.attrs_changed else 0
        except Hang as exc:
            item.ok, item.error = False, f"the page stopped answering after {item.action}: {exc}"
            rec.responsive = False
            rec.hang = item.error
            raise
        except PlaywrightError as exc:
            item.ok, item.error = False, _first_line(exc)
            try:  # an action that timed out on a renderer stuck in a loop: is the page still there?
                await _bounded(page.evaluate("1"), 5.0)
            except Hang as hang:
                item.error = f"the page stopped answering after {item.action}: {hang}"
                rec.responsive = False
                rec.hang = item.error
                raise
            except PlaywrightError:
                pass
        if opts.keyframes:
            path = self.live.keyframes / f"i-{item.index:02d}.png"
            taken = await screenshot(page, path, self.live.t0, opts.settle_ms)
            if taken is not None:
                item.keyframe, item.keyframe_s = str(path), taken
        await page.wait_for_timeout(opts.gap_ms)
        item.window_end_s = self.now()
        item.errors = rec.page_errors[errors_before[0]:] + rec.console_errors[errors_before[1]:]
        return item.ok and (item.text_changed or item.attrs_changed or item.navigated or (item.scrolled and control.kind == "link"))

    async def _uncover(self, locator: Any, timeout: int) -> str:
        """A dialog or overlay an earlier interaction opened covers the target: dismiss it the way a person
        would (Escape, then its close button), or load the page again. Says what it did ("" if nothing)."""
        done = []
        for attempt in ("escape", "close", "reload"):
            try:
                await locator.scroll_into_view_if_needed(timeout=timeout)
                covered = await locator.evaluate(COVERED_JS)
            except PlaywrightError:
                covered = False
            if not covered:
                return ", ".join(done)
            if attempt == "escape":
                await self.page.keyboard.press("Escape")
            elif attempt == "close":
                if not await self.page.evaluate(CLOSE_JS, covered):
                    continue
            else:
                await self.page.goto(self.record.origin + "/", timeout=self.options.load_timeout_ms, wait_until="load")
                await self._settle()
                await self.discover()
                done.append("reloaded the page")
                return ", ".join(done)
            await self._settle()
            done.append({"escape": "pressed Escape", "close": "clicked the covering dialog's close button"}[attempt])
        return ", ".join(done)

    async def _act(self, control: Control, locator: Any, timeout: int) -> None:
        page, kind = self.page, control.kind
        if kind in ("button", "link", "handler", "checkbox"):
            if kind == "button":  # a careful user fills a form before submitting it (again, on a retry)
                await locator.evaluate(FILL_FORM_JS, {"byType": PLAUSIBLE, "fallback": "Buy milk"})
            box = await locator.bounding_box(timeout=timeout)
            size = self.options.viewport
            if kind == "handler" and box and box["width"] * box["height"] >= 0.8 * size["width"] * size["height"]:
                await locator.click(position={"x": 8, "y": 8}, timeout=timeout)  # a backdrop: its edge, not the dialog on it
            else:
                await locator.click(timeout=timeout)
        elif kind == "hover":
            await locator.hover(timeout=timeout)
        elif kind in ("input", "field"):
            await locator.evaluate("(el) => el.setAttribute('data-envfarm-typed', '1')")
            if control.type in ("date", "time", "datetime-local", "month", "week", "color"):
                await locator.fill(plausible_text(control), timeout=timeout)
            else:
                await locator.click(timeout=timeout)
                await locator.fill("", timeout=timeout)
                await locator.press_sequentially(plausible_text(control), delay=15, timeout=timeout * 3)
                if kind == "input" and control.path.split(" > ")[-1].split(":")[0] != "textarea":
                    await locator.press("Enter", timeout=timeout)
        elif kind == "select":
            values = await locator.evaluate("(el) => [...el.options].map((o) => o.value)")
            current = await locator.evaluate("(el) => el.selectedIndex")
            if len(values) > 1:
                await locator.select_option(index=(current + 1) % len(values), timeout=timeout)
        elif kind == "range":
            await locator.click(timeout=timeout)
            for _ in range(5):
                await page.keyboard.press("ArrowRight")
        elif kind == "canvas":
            box = await locator.bounding_box(timeout=timeout)
            x, y, w, h = box["x"], box["y"], box["width"], box["height"]
            await page.mouse.click(x + w / 2, y + h / 2)
            await page.mouse.move(x + w * 0.3, y + h * 0.4)
            await page.mouse.down()
            await page.mouse.move(x + w * 0.7, y + h * 0.6, steps=5)
            await page.mouse.up()
        elif kind == "draggable":
            drop = await page.evaluate(
                "(sel) => { const src = document.querySelector(sel); const E = window.__envfarm;"
                " const t = [...document.querySelectorAll('body *')].find((el) => E && E.handlers.get(el) && E.handlers.get(el).has('drop') && !el.contains(src) && !src.contains(el));"
                " if (!t) return null; t.setAttribute('data-envfarm-drop', '1'); return true; }",
                f'[data-envfarm-c="{control.id}"]',
            )
            if drop:
                await locator.drag_to(page.locator('[data-envfarm-drop="1"]').first, timeout=timeout)
            else:
                box = await locator.bounding_box(timeout=timeout)
                await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                await page.mouse.down()
                await page.mouse.move(box["x"] + box["width"] / 2 + 120, box["y"] + box["height"] / 2 + 40, steps=8)
                await page.mouse.up()
        elif kind == "keyboard":
            if control.path != "body":
                target = page.locator(control.path).first
                await target.click(timeout=timeout)
            for key in KEYS:
                await page.keyboard.press(key)
                await page.wait_for_timeout(120)
        elif kind == "scroll":
            size = self.options.viewport
            await page.mouse.move(size["width"] / 2, size["height"] / 2)
            await page.mouse.wheel(0, size["height"] * 0.8)


def _action_name(control: Control) -> str:
    return {
        "button": "click", "link": "click", "handler": "click", "checkbox": "click", "hover": "hover", "input": "type + Enter",
        "field": "type", "select": "select another option", "range": "arrow right x5", "canvas": "click + drag",
        "draggable": "drag", "keyboard": "press " + ", ".join(k if k != " " else "Space" for k in KEYS), "scroll": "scroll",
    }[control.kind]


def _link_skip(href: str, origin: str) -> str:
    """Links a careful user would not judge the page by, offline: placeholders and other sites."""
    if href in ("#", "") or href.startswith("javascript:"):
        return "a placeholder link (href #)"
    if href.startswith(("http:", "https:", "//", "mailto:", "tel:")) and not href.startswith(origin):
        return f"leaves the page ({href[:80]})"
    return ""


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


async def explore_session(host: BrowserHost, origin: str, out_dir: Path, options: ExploreOptions | None = None, cdn: CdnShim | None = None) -> ExplorationRecord:
    """Explore the app at `origin`; video in out_dir/session.webm, keyframes in out_dir/keyframes."""
    options = options or ExploreOptions()
    record = ExplorationRecord(origin=origin)
    async with recorded_page(host, record, out_dir, options.viewport, options.action_timeout_ms, options.session_timeout_s, cdn, INSTRUMENT_JS) as live:
        if live is None:
            return record
        try:
            await asyncio.wait_for(Explorer(live, record, options).run(), timeout=options.session_timeout_s)
        except Hang:
            pass  # written into the record; the context is closed (and the browser killed if it must be)
    return record


def record_dict(record: ExplorationRecord) -> dict[str, Any]:
    return asdict(record)
