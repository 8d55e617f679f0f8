"""Drive one page through an interaction script in its own browser context, recording video.

Everything the page does that matters is written down as it happens (console errors, uncaught
exceptions, failed and blocked requests, step timings, the boxes of the regions visual checks will
look at); the visual checks themselves run afterwards on the video (see checks.py). A request not
to the app's origin is answered by the offline CDN shim (cdn.py) when it is a CDN URL the shim can
serve, and aborted otherwise; both are recorded. Each step's keyframe is a screenshot taken once the
step's effect has settled (scrolling stopped, no request in flight, two animation frames painted, each
wait bounded), because a video frame picked by time can still show the page from before the step. The
context is always closed; if closing hangs (a renderer stuck in an infinite loop), the caller's host
kills the browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urljoin

from playwright.async_api import BrowserContext, Page, Route
from playwright.async_api import Error as PlaywrightError

from envfarm.verifiers.web.browser import BrowserHost
from envfarm.verifiers.web.cdn import CdnShim
from envfarm.verifiers.web.script import Expectation, InteractionScript, Step

PAGE_REGION = "page"


CHANGE_WINDOW_MS = 600
SETTLE_BOUND_MS = 2000  # longest wait for a step's effect to settle before its keyframe is taken

@dataclass
class CheckResult:
    check: str
    passed: bool
    detail: str
    step: int | None = None
    source: str = "dom"  # dom | video | session
    axis: str = "functional"  # executability | functional | visual


@dataclass
class StepRecord:
    index: int
    label: str
    started_s: float
    ended_s: float = 0.0
    ok: bool = True
    error: str = ""
    boxes: dict[str, list[int] | None] = field(default_factory=dict)  # region -> x, y, w, h at step end
    window_end_s: float = 0.0
    settled: dict[str, bool] = field(default_factory=dict)  # scroll / network / frames: settled within the bound
    keyframe: str = ""  # screenshot taken after the step settled ("" when none could be taken)
    keyframe_s: float | None = None  # when that screenshot was taken, on the session clock


@dataclass
class SessionRecord:
    origin: str
    steps: list[StepRecord] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    page_error_times: list[float] = field(default_factory=list)  # session clock, one per page error
    failed_requests: list[str] = field(default_factory=list)
    blocked_requests: list[str] = field(default_factory=list)
    cdn_requests: list[dict[str, Any]] = field(default_factory=list)  # every CDN request and what the shim did
    overflow: dict[str, int] = field(default_factory=dict)
    video: str = ""
    sync_s: float = 0.0  # our clock when the sync flash was painted
    video_offset_s: float | None = None  # video time minus our time, from the sync flash
    duration_s: float = 0.0
    timed_out: bool = False
    browser_killed: bool = False
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _box(page: Page, region: str, timeout_ms: int) -> list[int] | None:
    if region == PAGE_REGION:
        size = page.viewport_size or {"width": 0, "height": 0}
        return [0, 0, size["width"], size["height"]]
    try:
        box = await page.locator(region).first.bounding_box(timeout=timeout_ms)
    except PlaywrightError:
        return None
    return None if box is None else [round(box["x"]), round(box["y"]), round(box["width"]), round(box["height"])]


async def _act(page: Page, step: Step, origin: str, timeout_ms: int) -> None:
    action = step.action
    if action == "goto":
        await page.goto(urljoin(origin + "/", step.goto.lstrip("/")), timeout=timeout_ms, wait_until="load")
    elif action == "click":
        await page.locator(step.click).first.click(timeout=timeout_ms)
    elif action == "hover":
        await page.locator(step.hover).first.hover(timeout=timeout_ms)
    elif action == "type":
        await page.locator(step.type["selector"]).first.fill(step.type["text"], timeout=timeout_ms)
    elif action == "press":
        if isinstance(step.press, str):
            await page.keyboard.press(step.press)
        else:
            await page.locator(step.press["selector"]).first.press(step.press["key"], timeout=timeout_ms)
    elif action == "scroll":
        spec = step.scroll or {}
        if "selector" in spec:
            await page.locator(spec["selector"]).first.scroll_into_view_if_needed(timeout=timeout_ms)
        else:
            await page.mouse.wheel(float(spec.get("dx", 0)), float(spec.get("dy", 0)))
    elif action == "wait":
        await page.wait_for_timeout(step.wait)


async def _dom_check(page: Page, exp: Expectation, record: SessionRecord, index: int, timeout_ms: int) -> CheckResult:
    kind = exp.kind
    try:
        if kind == "visible":
            ok = await page.locator(exp.visible).first.is_visible()
            return CheckResult(f"visible {exp.visible}", ok, "visible" if ok else "not visible", index)
        if kind == "in_viewport":
            box = await _box(page, exp.in_viewport, timeout_ms)
            size = page.viewport_size or {"width": 0, "height": 0}
            ok = box is not None and box[0] >= 0 and box[1] >= 0 and box[0] + box[2] <= size["width"] and box[1] + box[3] <= size["height"]
            return CheckResult(f"in viewport {exp.in_viewport}", ok, f"box {box} in {size['width']}x{size['height']}", index, axis="visual")
        if kind == "text":
            spec = exp.text
            actual = (await page.locator(spec.selector).first.inner_text(timeout=timeout_ms)).strip()
            ok = (spec.equals is None or actual == spec.equals) and (spec.contains is None or spec.contains in actual)
            want = f"== {spec.equals!r}" if spec.equals is not None else f"contains {spec.contains!r}"
            return CheckResult(f"text {spec.selector} {want}", ok, f"text is {actual[:120]!r}", index)
        if kind == "count":
            spec = exp.count
            n = await page.locator(spec.selector).count()
            ok = (spec.equals is None or n == spec.equals) and (spec.at_least is None or n >= spec.at_least)
            return CheckResult(f"count {spec.selector}", ok, f"{n} element(s)", index)
        if kind == "no_console_errors":
            errors = record.console_errors + record.page_errors
            return CheckResult("no console errors", not errors, "; ".join(errors[:3]) or "none", index, axis="executability")
        if kind == "no_failed_requests":
            return CheckResult("no failed requests", not record.failed_requests, "; ".join(record.failed_requests[:3]) or "none", index, axis="executability")
    except PlaywrightError as exc:
        return CheckResult(kind, False, f"could not check: {str(exc).splitlines()[0]}", index)
    raise AssertionError(f"unhandled expectation {kind}")


_SCROLL_STILL_JS = """(bound) => new Promise((resolve) => {
  const t0 = performance.now();
  const pos = () => { const e = document.scrollingElement || document.documentElement; return `${scrollX},${scrollY},${e ? e.scrollTop : 0},${e ? e.scrollLeft : 0}`; };
  let last = pos(), still = 0;
  const tick = () => {
    const now = pos();
    still = now === last ? still + 1 : 0;
    last = now;
    if (still >= 3) return resolve(true);
    if (performance.now() - t0 > bound) return resolve(false);
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})"""
TWO_FRAMES_JS = "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))"


async def settle(page: Page, in_flight: set[Any], bound_ms: int) -> dict[str, bool]:
    """Wait, each part bounded, until the step's effect has settled: the scroll position is unchanged
    for three animation frames, no request is in flight, and two more frames have been painted."""
    out: dict[str, bool] = {}
    deadline = time.monotonic() + bound_ms / 1000
    try:
        out["scroll"] = bool(await asyncio.wait_for(page.evaluate(_SCROLL_STILL_JS, bound_ms), timeout=bound_ms / 1000 + 0.5))
    except (PlaywrightError, asyncio.TimeoutError):
        out["scroll"] = False
    while in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    out["network"] = not in_flight
    try:
        remaining = max(0.2, deadline - time.monotonic())
        out["frames"] = bool(await asyncio.wait_for(page.evaluate(TWO_FRAMES_JS), timeout=remaining))
    except (PlaywrightError, asyncio.TimeoutError):
        out["frames"] = False
    return out


async def screenshot(page: Page, path: Path, t0: float, bound_ms: int) -> float | None:
    """A keyframe: the screenshot's time on the session clock, or None when none could be taken."""
    taken = time.monotonic() - t0
    try:
        await asyncio.wait_for(page.screenshot(path=str(path), timeout=bound_ms), timeout=bound_ms / 1000 + 1)
    except (PlaywrightError, asyncio.TimeoutError):
        return None
    return round(taken, 3)


async def _keyframe(page: Page, rec: StepRecord, keyframes: Path | None, t0: float, bound_ms: int) -> None:
    if keyframes is None:
        return
    path = keyframes / f"step-{rec.index:02d}.png"
    taken = await screenshot(page, path, t0, bound_ms)
    if taken is not None:  # else the report falls back to the video frame, and says so
        rec.keyframe, rec.keyframe_s = str(path), taken


async def _run_steps(page: Page, script: InteractionScript, record: SessionRecord, t0: float,
                     in_flight: set[Any] | None = None, keyframes: Path | None = None) -> None:
    timeout_ms = script.step_timeout_ms
    in_flight = in_flight if in_flight is not None else set()
    bound_ms = min(timeout_ms, SETTLE_BOUND_MS)
    for index, step in enumerate(script.steps):
        rec = StepRecord(index=index, label=step.label, started_s=time.monotonic() - t0)
        record.steps.append(rec)
        try:
            await asyncio.wait_for(_act(page, step, record.origin, timeout_ms), timeout=timeout_ms / 1000 + 1)
            await page.wait_for_timeout(step.settle_ms)
            rec.settled = await settle(page, in_flight, bound_ms)
        except (PlaywrightError, asyncio.TimeoutError) as exc:
            rec.ok, rec.error = False, (str(exc).splitlines() or [type(exc).__name__])[0][:300]
            rec.ended_s = rec.window_end_s = time.monotonic() - t0
            await _keyframe(page, rec, keyframes, t0, min(bound_ms, 1000))
            record.checks.append(CheckResult(f"step {index}: {step.label}", False, rec.error, index, "session", "executability"))
            return  # the page is not in the state later steps assume
        rec.ended_s = time.monotonic() - t0
        await _keyframe(page, rec, keyframes, t0, bound_ms)
        regions = {e.changes or e.animates or e.still for e in step.expect if e.visual}
        for region in sorted(regions):
            rec.boxes[region] = await _box(page, region, timeout_ms)
        for exp in step.expect:
            if not exp.visual:  # the step has settled: a missing element will not appear by waiting
                record.checks.append(await _dom_check(page, exp, record, index, min(timeout_ms, 1000)))
        if any(e.animates or e.still for e in step.expect):
            await page.wait_for_timeout(step.window_ms)
        elif any(e.changes for e in step.expect):
            # A loaded machine delivers screencast frames late: leave a short window in which the
            # step's effect can reach the video, so `changes` does not read a frame from before it.
            await page.wait_for_timeout(min(step.window_ms, CHANGE_WINDOW_MS))
        rec.window_end_s = time.monotonic() - t0


async def _overflow(page: Page) -> dict[str, int]:
    return await page.evaluate(
        "() => ({scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,"
        " scrollHeight: document.documentElement.scrollHeight, innerHeight: window.innerHeight})"
    )


@dataclass
class LivePage:
    """The page of a recorded session, with what the session body needs to drive and time it."""

    page: Page
    in_flight: set[Any]  # requests not yet finished or failed
    t0: float  # the session clock's zero (time.monotonic())
    keyframes: Path  # folder for screenshots taken along the way


@contextlib.asynccontextmanager
async def recorded_page(
    host: BrowserHost, record: SessionRecord, out_dir: Path, viewport: dict[str, int], timeout_ms: int,
    session_timeout_s: float, cdn: CdnShim | None = None, init_script: str | None = None,
) -> AsyncIterator[LivePage | None]:
    """A fresh browser context recording video, behind the request gate, with every console error,
    uncaught exception and failed or blocked request written into `record` as it happens.

    The one way both modes (a script's steps, the explorer's interactions) get a page: the body drives
    `live.page`; a body that runs past `session_timeout_s` (asyncio.TimeoutError) or loses the browser
    (PlaywrightError) ends the session with that written into `record`, not raised; it is None when
    no page could be opened (the reason in `record.error`). On exit the context
    is closed (the browser killed if closing hangs) and the video lands in out_dir/session.webm.
    """
    origin = record.origin
    out_dir.mkdir(parents=True, exist_ok=True)
    video_dir = out_dir / ".video"
    keyframes = out_dir / "keyframes"
    keyframes.mkdir(parents=True, exist_ok=True)
    context: BrowserContext | None = None
    in_flight: set[Any] = set()
    t0 = time.monotonic()

    async def gate(route: Route) -> None:
        url = route.request.url
        if url == origin or url.startswith(origin + "/"):
            await route.continue_()
            return
        answer = await asyncio.to_thread(cdn.answer, url) if cdn is not None and cdn.handles(url) else None
        if answer is not None:
            record.cdn_requests.append(answer.record.to_dict())
            if answer.status:
                await route.fulfill(status=answer.status, headers=answer.headers, body=answer.body)
                return
        record.blocked_requests.append(url[:200])
        await route.abort("blockedbyclient")

    def request_failed(req: Any) -> None:
        if "ERR_PROXY_CONNECTION_FAILED" in str(req.failure):
            # A redirect that left the gate (see browser.py's proxy flag): blocked all the same.
            record.blocked_requests.append(req.url[:200])
        elif req.url[:200] not in record.blocked_requests:
            record.failed_requests.append(f"{req.url[:200]} ({req.failure})")

    def lost(exc: PlaywrightError) -> None:
        record.error = (str(exc).splitlines() or ["browser error"])[0][:300]
        if host.killed_for_memory:
            record.error = f"browser killed by the memory watchdog (over {host.limits.memory_mb} MiB): {record.error}"

    live: LivePage | None = None
    try:
        context = await host.browser.new_context(
            viewport=viewport, record_video_dir=str(video_dir), record_video_size=viewport, service_workers="block"
        )
        context.set_default_timeout(timeout_ms)
        await context.route("**/*", gate)
        if init_script:
            await context.add_init_script(script=init_script)
        page = await context.new_page()
        t0 = time.monotonic()
        # A black flash on about:blank before the first step lets the analysis align the video's clock
        # with ours: the screencast's timeline can start late and lead our clock by a few hundred ms.
        await page.evaluate("document.documentElement.style.background = '#000'")
        record.sync_s = time.monotonic() - t0
        await page.wait_for_timeout(250)
        page.on("console", lambda msg: record.console_errors.append(msg.text[:300]) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: (record.page_errors.append(str(exc)[:300]), record.page_error_times.append(round(time.monotonic() - t0, 3))))
        page.on("requestfailed", request_failed)
        page.on("request", lambda req: (in_flight.add(req), in_flight.discard(req.redirected_from)))
        page.on("requestfinished", lambda req: in_flight.discard(req))
        page.on("requestfailed", lambda req: in_flight.discard(req))
        page.on("response", lambda resp: record.failed_requests.append(f"{resp.url[:200]} (HTTP {resp.status})") if resp.status >= 400 else None)
        live = LivePage(page, in_flight, t0, keyframes)
    except PlaywrightError as exc:
        lost(exc)
    try:
        yield live
    except asyncio.TimeoutError:
        record.timed_out = True
        record.checks.append(CheckResult("session time limit", False, f"session ran past {session_timeout_s:.0f}s", None, "session", "executability"))
    except PlaywrightError as exc:
        lost(exc)
    finally:
        record.duration_s = time.monotonic() - t0
        if context is not None:
            try:
                await asyncio.wait_for(context.close(), timeout=15)
            except (asyncio.TimeoutError, PlaywrightError):
                record.browser_killed = True
                host.kill()
        videos = sorted(video_dir.glob("*.webm"))
        if videos:
            target = out_dir / "session.webm"
            shutil.move(str(videos[-1]), target)
            record.video = str(target)
        shutil.rmtree(video_dir, ignore_errors=True)


async def run_session(host: BrowserHost, origin: str, script: InteractionScript, out_dir: Path, cdn: CdnShim | None = None) -> SessionRecord:
    """Run `script` against the app at `origin`; the video lands in out_dir/session.webm, step keyframes
    in out_dir/keyframes. With `cdn`, CDN requests are answered from its cache instead of blocked."""
    record = SessionRecord(origin=origin)
    async with recorded_page(host, record, out_dir, script.viewport, script.step_timeout_ms, script.session_timeout_s, cdn) as live:
        if live is None:
            return record
        await asyncio.wait_for(_run_steps(live.page, script, record, live.t0, live.in_flight, live.keyframes), timeout=script.session_timeout_s)
        if script.check_overflow and record.steps and all(s.ok for s in record.steps):
            record.overflow = await asyncio.wait_for(_overflow(live.page), timeout=script.step_timeout_ms / 1000)
    return record
