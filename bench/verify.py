"""Benchmark of the verifiers: log-grading throughput, web verification latency and throughput with N
parallel browser contexts, accuracy on the scripted web-app corpus, and accuracy of unscripted
verification (the explorer) on the model-style page corpus (tests/verifiers/webcorpus: 30 pages, each
correct with broken twins), with false passes and false fails apart, seconds per page, and the CDN
shim's cache hit rate (CDN requests answered without a registry fetch, from an empty cache filled by
the fake npm registry on loopback, as the tests do: no host is reached).

    python -m bench.verify                    (writes bench/results/verify.json)
    python -m bench.verify --explore-only     (the unscripted section and one scripted pass at the same
                                               parallelism, merged into the same file)

Baselines run in the same process: log grading is compared with a naive one-pass line scan (what a
minimal SWE-bench-style parser does, without our sections, id splitting or forgery checks); parallel
web throughput is compared with one context at a time.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

from bench.common import machine_load, machine_notes
from envfarm.verifiers.grading import grade
from envfarm.verifiers.logs import parse_log
from envfarm.verifiers.web.browser import BrowserHost
from envfarm.verifiers.web.script import load_script
from envfarm.verifiers.web.verifier import verify_web_async

ROOT = Path(__file__).resolve().parent.parent
WEBAPPS = ROOT / "tests" / "verifiers" / "webapps"
RESULTS = ROOT / "bench" / "results" / "verify.json"
APPS = ("clicker", "todo")
REPEATS = 5


def synthetic_pytest_log(n_tests: int) -> tuple[str, list[str]]:
    """A -rA log shaped like the real fixture: verbose lines, a captured-output section, the summary."""
    ids = [f"tests/unit/test_mod{i // 50}.py::TestCase{i % 7}::test_case_{i}[param {i % 13} - x]" for i in range(n_tests)]
    status = ["FAILED" if i % 97 == 0 else "PASSED" for i in range(n_tests)]
    lines = ["============================= test session starts ==============================", "platform linux -- Python 3.11.7, pytest-9.2.0", f"collected {n_tests} items", ""]
    lines += [f"{tid} {st} [{100 * i // n_tests:3d}%]" for i, (tid, st) in enumerate(zip(ids, status))]
    lines += ["", "==================================== PASSES ====================================", "----------------------------- Captured stdout call -----------------------------", "PASSED tests/unit/test_fake.py::test_forged", ""]
    lines += ["=========================== short test summary info ============================"]
    lines += [f"{st} {tid}" + (" - AssertionError: assert 1 == 2" if st == "FAILED" else "") for tid, st in zip(ids, status)]
    failed = status.count("FAILED")
    lines += [f"================= {failed} failed, {n_tests - failed} passed in 812.31s (0:13:32) ================="]
    return "\n".join(lines) + "\n", ids


def naive_scan(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        for word in ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL"):
            if line.startswith(word + " "):
                out[line[len(word) + 1 :].split(" - ")[0]] = word
    return out


def bench_logs() -> dict:
    text, ids = synthetic_pytest_log(40_000)
    megabytes = len(text.encode()) / 1e6
    f2p, p2p = ids[:20], ids[20:2000]

    def timed(fn) -> float:
        runs = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)

    ours = timed(lambda: grade(parse_log("pytest", text), f2p, p2p, exit_code=1))
    naive = timed(lambda: naive_scan(text))
    junit_path = WEBAPPS.parent / "logs" / "pytest_junit_xunit1.xml"
    case = junit_path.read_text()
    head, body_tail = case.split("<testcase", 1)
    body = "<testcase" + body_tail.rsplit("</testsuite>", 1)[0]
    big_xml = head + body * 2000 + "</testsuite></testsuites>"
    junit = timed(lambda: parse_log("junit", big_xml))
    return {
        "pytest_log_mb": round(megabytes, 2),
        "pytest_log_tests": len(ids),
        "pytest_parse_and_grade_s_median": round(ours, 4),
        "pytest_mb_per_s": round(megabytes / ours, 1),
        "baseline_naive_scan_mb_per_s": round(megabytes / naive, 1),
        "speed_ratio_vs_naive_scan": round(naive / ours, 3),  # < 1: slower than the naive scan (it does more)
        "junit_xml_mb": round(len(big_xml.encode()) / 1e6, 2),
        "junit_mb_per_s": round(len(big_xml.encode()) / 1e6 / junit, 1),
        "repeats": REPEATS,
    }


def corpus() -> list[tuple[str, str]]:
    return [(app, d.name) for app in APPS for d in sorted((WEBAPPS / app).iterdir()) if d.is_dir()]


async def run_corpus(host: BrowserHost, parallel: int, out_root: Path) -> tuple[float, list[dict]]:
    limit = asyncio.Semaphore(parallel)

    async def one(app: str, variant: str) -> dict:
        async with limit:
            script = load_script(WEBAPPS / app / "script.yaml")
            script.step_timeout_ms = 3000
            start = time.perf_counter()
            reward = await verify_web_async(host, WEBAPPS / app / variant, script, out_root / f"p{parallel}" / app / variant)
            return {
                "app": app,
                "variant": variant,
                "passed": reward.passed,
                "value": reward.value,
                "seconds": time.perf_counter() - start,
                "failed_checks": reward.details["failed_checks"],
            }

    start = time.perf_counter()
    rows = await asyncio.gather(*(one(a, v) for a, v in corpus()))
    return time.perf_counter() - start, list(rows)


async def bench_web(out_root: Path) -> dict:
    results: dict = {"by_parallel_contexts": {}}
    async with BrowserHost() as host:
        for parallel in (1, 2, 4):
            wall, rows = await run_corpus(host, parallel, out_root)
            seconds = sorted(r["seconds"] for r in rows)
            correct_ok = [r for r in rows if r["variant"] == "correct"]
            right = sum((r["variant"] == "correct") == r["passed"] for r in rows)
            results["by_parallel_contexts"][str(parallel)] = {
                "verifications": len(rows),
                "wall_s": round(wall, 2),
                "verifications_per_min": round(60 * len(rows) / wall, 2),
                "seconds_per_verification_p50": round(statistics.median(seconds), 2),
                "seconds_per_verification_p90": round(seconds[int(0.9 * (len(seconds) - 1))], 2),
                "accuracy": round(right / len(rows), 4),
                "correct_apps_passed": f"{sum(r['passed'] for r in correct_ok)}/{len(correct_ok)}",
                "misclassified": {f"{r['app']}/{r['variant']}": r["failed_checks"] for r in rows if (r["variant"] == "correct") != r["passed"]},
            }
        results["browser_peak_pss_mib"] = round(host.peak_memory / 2**20)
    base = results["by_parallel_contexts"]["1"]["verifications_per_min"]
    for entry in results["by_parallel_contexts"].values():
        entry["throughput_ratio_vs_1_context"] = round(entry["verifications_per_min"] / base, 3)
    results["seconds_per_verification_p50"] = results["by_parallel_contexts"]["1"]["seconds_per_verification_p50"]
    results["accuracy"] = min(e["accuracy"] for e in results["by_parallel_contexts"].values())
    return results


EXPLORE_PARALLEL = int(__import__("os").environ.get("BENCH_EXPLORE_PARALLEL", "2"))


async def bench_explore(out_root: Path) -> dict:
    """Every corpus page explored with no script (its rubric only), two contexts at a time."""
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "verifiers"))
    import explore_corpus  # noqa: E402 - test-side corpus loader, shared with the tests
    from fake_npm import FakeRegistry  # noqa: E402

    from envfarm.verifiers.web.cdn import CdnShim
    from envfarm.verifiers.web.explorer import explore_web_async
    from envfarm.verifiers.web.npm import NpmCache

    pages = explore_corpus.load()
    registry = FakeRegistry()
    shim = CdnShim(NpmCache(out_root / "cdn-cache", registry.url))
    limit = asyncio.Semaphore(EXPLORE_PARALLEL)
    rows: list[dict] = []
    try:
        async with BrowserHost() as host:
            async def one(page) -> dict:
                async with limit:
                    folder = page.write(out_root / "pages")
                    start = time.perf_counter()
                    reward = await explore_web_async(host, folder, out_root / "explore" / page.key, rubric=page.rubric, cdn=shim)
                    seconds = time.perf_counter() - start
                    failed = reward.details["failed_checks"]
                    row = {"page": page.key, "class": page.cls, "correct": page.correct, "passed": reward.passed, "value": reward.value,
                           "seconds": round(seconds, 2), "failed_checks": failed[:4], "cdn_requests": reward.details["cdn_shimmed"]}
                    row["right"] = reward.passed == page.correct
                    row["for_its_reason"] = page.correct or any(page.expect in f for f in failed)
                    print(f"  {'ok ' if row['right'] else 'BAD'} {page.key}: {'passed' if reward.passed else 'failed'} in {seconds:.1f}s", flush=True)
                    return row

            start = time.perf_counter()
            rows = list(await asyncio.gather(*(one(p) for p in pages)))
            wall = time.perf_counter() - start
            peak = round(host.peak_memory / 2**20)
    finally:
        registry.close()
    correct = [r for r in rows if r["correct"]]
    broken = [r for r in rows if not r["correct"]]
    by_class: dict[str, dict] = {}
    for r in broken:
        entry = by_class.setdefault(r["class"], {"pages": 0, "caught": 0})
        entry["pages"] += 1
        entry["caught"] += int(not r["passed"])
    cdn_requests = sum(r["cdn_requests"] for r in rows)
    registry_fetches = len(registry.hits)
    return {
        "pages": len(rows), "correct_pages": len(correct), "broken_pages": len(broken), "parallel_contexts": EXPLORE_PARALLEL,
        "accuracy": round(sum(r["right"] for r in rows) / len(rows), 4),
        "false_passes": [r["page"] for r in broken if r["passed"]],
        "false_fails": {r["page"]: r["failed_checks"] for r in correct if not r["passed"]},
        "false_pass_rate": round(sum(r["passed"] for r in broken) / len(broken), 4),
        "false_fail_rate": round(sum(not r["passed"] for r in correct) / len(correct), 4),
        "caught_for_the_named_reason": f"{sum(r['for_its_reason'] and not r['passed'] for r in broken)}/{sum(not r['passed'] for r in broken)}",
        "by_breakage": by_class,
        "seconds_per_page_p50": round(statistics.median(r["seconds"] for r in rows), 2),
        "seconds_per_page_p90": round(sorted(r["seconds"] for r in rows)[int(0.9 * (len(rows) - 1))], 2),
        "wall_s": round(wall, 1),
        "browser_peak_pss_mib": peak,
        "cdn": {"requests_answered": cdn_requests, "registry_fetches": registry_fetches,
                "cache_hit_rate": round(1 - registry_fetches / cdn_requests, 4) if cdn_requests else None,
                "note": "one cache shared by all pages, empty at the start: the fetches are each package's metadata and tarball, once"},
        "rows": rows,
    }


def main() -> None:
    import sys
    import tempfile

    load_at_start = machine_load()
    if "--explore-only" in sys.argv[1:]:
        with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
            explore = asyncio.run(bench_explore(Path(tmp)))

            async def scripted() -> tuple[float, list[dict]]:
                async with BrowserHost() as host:
                    return await run_corpus(host, EXPLORE_PARALLEL, Path(tmp) / "scripted")

            _, rows = asyncio.run(scripted())
        print(f"explore: accuracy {explore['accuracy']} ({len(explore['false_passes'])} false passes, {len(explore['false_fails'])} false fails), p50 {explore['seconds_per_page_p50']}s")
        out = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"benchmark": "verify"}
        right = sum((r["variant"] == "correct") == r["passed"] for r in rows)
        scripted_now = {"verifications": len(rows), "parallel_contexts": EXPLORE_PARALLEL, "accuracy": round(right / len(rows), 4),
                        "seconds_per_verification_p50": round(statistics.median(r["seconds"] for r in rows), 2),
                        "misclassified": [f"{r['app']}/{r['variant']}" for r in rows if (r["variant"] == "correct") != r["passed"]]}
        out["summary"] = {
            "unscripted_accuracy": explore["accuracy"], "unscripted_false_passes": len(explore["false_passes"]),
            "unscripted_false_fails": len(explore["false_fails"]), "scripted_accuracy": scripted_now["accuracy"],
            "unscripted_seconds_per_page_p50": explore["seconds_per_page_p50"], "scripted_seconds_per_page_p50": scripted_now["seconds_per_verification_p50"],
            "cdn_cache_hit_rate": explore["cdn"]["cache_hit_rate"], "same_run": "explore and scripted_same_run measured in one process, one after the other",
        }
        out["scripted_same_run"] = scripted_now
        out["explore"] = explore
        out["explore_machine"] = machine_notes(load_at_start)
        out["explore_timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {RESULTS}")
        return
    logs = bench_logs()
    print(f"logs: pytest parse+grade {logs['pytest_mb_per_s']} MB/s (naive scan {logs['baseline_naive_scan_mb_per_s']} MB/s); junit {logs['junit_mb_per_s']} MB/s")
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        web = asyncio.run(bench_web(Path(tmp)))
        explore = asyncio.run(bench_explore(Path(tmp)))
    for n, entry in web["by_parallel_contexts"].items():
        print(f"web x{n}: p50 {entry['seconds_per_verification_p50']}s, {entry['verifications_per_min']}/min, accuracy {entry['accuracy']}")
    print(f"explore: accuracy {explore['accuracy']} ({len(explore['false_passes'])} false passes, {len(explore['false_fails'])} false fails), p50 {explore['seconds_per_page_p50']}s")
    summary_line = {
        "unscripted_accuracy": explore["accuracy"], "unscripted_false_passes": len(explore["false_passes"]), "unscripted_false_fails": len(explore["false_fails"]),
        "scripted_accuracy": web["accuracy"], "unscripted_seconds_per_page_p50": explore["seconds_per_page_p50"],
        "scripted_seconds_per_page_p50": web["seconds_per_verification_p50"], "cdn_cache_hit_rate": explore["cdn"]["cache_hit_rate"],
    }
    out = {"benchmark": "verify", "summary": summary_line, "logs": logs, "web": web, "explore": explore, "machine": machine_notes(load_at_start),
           "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
