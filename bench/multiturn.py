"""A multi-turn agent workload on the pretrained tiny policy, for `make bench-rollout` (bench/rollout.py).

Each episode is the agent scaffold's conversation (envfarm.agent.protocol.render_prompt) driven by
`LMAgentPolicy`, the RL loop's in-process agent policy, against a scripted environment: 10-20 turns per
episode, each answered with a 200-2,000-byte observation in the shape of real tool output (a file shown with
`cat -n`, a directory listing, a test log, a diff), cut from held-out CPython stdlib files, all fixed by the
episode's seed. A tool call takes `tool_seconds` of wall time in the episode's own thread (a sandbox exec
round trip measured ~180 ms p50 in bench/results/sandbox.json; the default here is shorter to keep the run
short), during which the other episodes of a batched worker keep decoding.

Arms: prefix cache on/off x plain / fixed MTP (3 heads) / adaptive drafting x 1 or 8 concurrent episodes per
worker (1: the episodes one after another, each turn one engine call; 8: all at once through one
`ContinuousBatcher` with 8 slots). Every arm runs the same episodes; arms are interleaved per repetition.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from dataclasses import dataclass

from envfarm.agent.protocol import SYSTEM_PROMPT, render_prompt
from envfarm.trainer.agent.lm import LMAgentPolicy
from envfarm.trainer.data.stdlib_corpus import is_validation, stdlib_files, stdlib_root
from envfarm.trainer.rollout import Policy, PrefixCache, RolloutEngine, SamplingParams

PROBLEMS = ["The CSV reader drops the last row when the file has no trailing newline.",
            "Parsing a config file with an empty section raises KeyError instead of returning {}.",
            "The retry decorator sleeps one time too many before giving up.",
            "Relative imports fail when the package is installed as a zip file.",
            "The date formatter ignores the timezone of aware datetimes.",
            "Sorting a list of versions puts 1.10 before 1.9.",
            "The logger writes duplicate lines after a handler is reconfigured.",
            "Path normalisation turns '//server/share' into '/server/share' on POSIX."]


def _corpus() -> list[tuple[str, bytes]]:
    root = stdlib_root()
    files = [p for p in stdlib_files(root) if is_validation(p, root)]
    return [(str(p.relative_to(root)), p.read_bytes()) for p in files[:80]]


class ScriptedEnvironment:
    """The observations of one episode, fixed by its seed: what `cat`, `ls`, a test run or `git diff` print."""

    def __init__(self, seed: int, corpus: list[tuple[str, bytes]], turns: tuple[int, int] = (10, 20)) -> None:
        self.rng = random.Random(seed)
        self.corpus = corpus
        self.turns = self.rng.randint(*turns)

    def observation(self) -> str:
        size = self.rng.randint(200, 2000)
        name, data = self.corpus[self.rng.randrange(len(self.corpus))]
        text = data.decode("utf-8", "replace")
        kind = self.rng.choice(["cat", "ls", "pytest", "diff"])
        if kind == "cat":
            start = self.rng.randrange(max(1, text.count("\n") - 40))
            lines = text.splitlines()[start:start + 80]
            out = "\n".join(f"{start + i + 1:6}\t{line}" for i, line in enumerate(lines))
        elif kind == "ls":
            names = sorted({n for n, _ in self.rng.sample(self.corpus, min(30, len(self.corpus)))})
            out = "\n".join(f"-rw-r--r-- 1 agent agent {self.rng.randint(200, 90000):6} Dec  7 10:{i % 60:02} {n}" for i, n in enumerate(names))
        elif kind == "pytest":
            tests = [f"tests/test_{name.replace('/', '_')[:-3]}.py::test_case_{i} {'PASSED' if self.rng.random() > 0.2 else 'FAILED'}"
                     for i in range(30)]
            out = "============================= test session starts ==============================\n" + "\n".join(tests)
            out += f"\nE   AssertionError: {text[:300]}"
        else:
            start = self.rng.randrange(max(1, len(text) - 2000))
            out = f"diff --git a/{name} b/{name}\n--- a/{name}\n+++ b/{name}\n" + "\n".join(
                ("+" if i % 7 == 3 else "-" if i % 11 == 5 else " ") + line for i, line in enumerate(text[start:start + 2000].splitlines()))
        return out[:size] + f"\n[exit code {self.rng.choice([0, 0, 1])}]"


@dataclass
class EpisodeResult:
    tokens: int
    turns: int
    seconds: float
    ttft: list[float]
    reused: int
    prefilled: int


def run_episode(lm: LMAgentPolicy, env: ScriptedEnvironment, problem: str, tool_seconds: float) -> EpisodeResult:
    started = time.perf_counter()
    messages = [{"role": "system", "content": SYSTEM_PROMPT.format(workdir="/repo")}, {"role": "user", "content": problem}]
    tokens = 0
    for _ in range(env.turns):
        text, used = lm.act(render_prompt(messages))
        tokens += used
        messages.append({"role": "assistant", "content": text})
        time.sleep(tool_seconds)  # the sandbox command
        messages.append({"role": "tool", "content": env.observation()})
    stats = [c.stats for c in lm.turns]
    return EpisodeResult(tokens, env.turns, time.perf_counter() - started, [s["ttft_s"] for s in stats],
                         sum(s["reused_tokens"] for s in stats), sum(s["prefilled_tokens"] for s in stats))


def run_arm(model, corpus, draft: str | None, cache: bool, concurrency: int, episodes: int, params: SamplingParams,
            max_prompt_tokens: int, tool_seconds: float, seed: int, turns: tuple[int, int] = (10, 20)) -> dict:
    engine = RolloutEngine(model, prefix_cache=PrefixCache(budget_bytes=1 << 30))
    policy = Policy(model, engine)
    envs = [ScriptedEnvironment(seed + i, corpus, turns) for i in range(episodes)]
    problems = [PROBLEMS[i % len(PROBLEMS)] for i in range(episodes)]
    results: list[EpisodeResult | None] = [None] * episodes
    peak_entry = [0]
    started = time.perf_counter()
    batch_stats: dict = {}
    if concurrency == 1:
        for i in range(episodes):
            lm = LMAgentPolicy(policy, params, draft, max_prompt_tokens, prefix_cache=cache)
            results[i] = run_episode(lm, envs[i], problems[i], tool_seconds)
            peak_entry[0] = max(peak_entry[0], _entry_bytes(engine, lm))
            lm.release()
    else:
        batcher = LMAgentPolicy.batcher_for(policy, params, draft, slots=concurrency)
        assert batcher is not None

        def one(i: int) -> None:
            lm = LMAgentPolicy(policy, params, draft, max_prompt_tokens, batcher=batcher, prefix_cache=cache)
            results[i] = run_episode(lm, envs[i], problems[i], tool_seconds)
            peak_entry[0] = max(peak_entry[0], _entry_bytes(engine, lm))
            lm.release()

        pending = list(range(episodes))
        while pending:  # at most `concurrency` episodes at a time, each in its own thread
            wave, pending = pending[:concurrency], pending[concurrency:]
            threads = [threading.Thread(target=one, args=(i,)) for i in wave]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        batch_stats = batcher.stats()
        batcher.close()
    wall = time.perf_counter() - started
    done = [r for r in results if r is not None]
    if len(done) != episodes:
        raise RuntimeError(f"{episodes - len(done)} episodes failed")
    ttft = [t for r in done for t in r.ttft]
    tokens = sum(r.tokens for r in done)
    return {"episode_tokens_per_s": tokens / wall, "wall_s": wall, "tokens": tokens, "turns": sum(r.turns for r in done),
            "ttft_median_s": statistics.median(ttft), "ttft_p95_s": sorted(ttft)[int(0.95 * (len(ttft) - 1))],
            "reused_tokens": sum(r.reused for r in done), "prefilled_tokens": sum(r.prefilled for r in done),
            "peak_bytes_per_cached_episode": peak_entry[0], "prefix_cache_peak_bytes": engine.prefix_cache.stats.peak_bytes,
            "prefix_cache": engine.prefix_cache.stats.as_dict(),
            "steps_by_draft_heads": batch_stats.get("steps_by_draft_heads"),
            "admitted_while_decoding": batch_stats.get("admitted_while_decoding"),
            "mean_occupied_slots": batch_stats.get("mean_occupied_slots")}


def _entry_bytes(engine: RolloutEngine, lm: LMAgentPolicy) -> int:
    return engine.prefix_cache.entry_bytes().get(lm.key, 0) if lm.key is not None else 0


DRAFTS = (("plain", None), ("mtp3", "mtp"), ("adaptive", "adaptive"))
# The arms left out of a run (e.g. "mtp3" on a loaded machine) are named in setup.drafts.


def multiturn(model, reps: int, episodes: int, new_tokens: int, max_prompt_tokens: int, tool_seconds: float,
              concurrencies: tuple[int, ...] = (1, 8), turns: tuple[int, int] = (10, 20),
              nocache_drafts: tuple[str, ...] = ("plain",), drafts: tuple[str, ...] = ("plain", "mtp3", "adaptive"),
              log=print) -> dict:
    corpus = _corpus()
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.7, top_p=0.95, seed=0)
    # Every draft mode with the prefix cache; without it, plain only (the arms without a cache re-read the
    # whole history every turn: the slowest by far on 2 shared cores).
    arms = [(f"{'cache' if cache else 'nocache'}_{name}_c{c}", draft, cache, c)
            for c in concurrencies for cache in (True, False) for name, draft in DRAFTS
            if name in drafts and (cache or name in nocache_drafts)]
    runs: dict[str, list[dict]] = {label: [] for label, *_ in arms}
    for rep in range(reps):
        order = arms[rep % len(arms):] + arms[:rep % len(arms)]  # rotate, so drifting load hits every arm alike
        for label, draft, cache, c in order:
            started = time.process_time()
            r = run_arm(model, corpus, draft, cache, c, episodes, params, max_prompt_tokens, tool_seconds, 1000, turns)
            r["episode_tokens_per_cpu_s"] = r["tokens"] / max(1e-9, time.process_time() - started)
            runs[label].append(r)
            log(f"multiturn rep {rep + 1}/{reps} {label}: {r['episode_tokens_per_s']:.1f} tok/s, "
                f"ttft p50 {1000 * r['ttft_median_s']:.0f} ms, wall {r['wall_s']:.1f} s", flush=True)
    med = {label: {key: round(statistics.median(r[key] for r in rs), 4)
                   for key in ("episode_tokens_per_s", "episode_tokens_per_cpu_s", "ttft_median_s", "ttft_p95_s", "wall_s")}
           for label, rs in runs.items()}
    for label, rs in runs.items():
        med[label].update({"episode_tokens_per_s_all": [round(r["episode_tokens_per_s"], 2) for r in rs],
                           **{k: rs[-1][k] for k in ("tokens", "turns", "reused_tokens", "prefilled_tokens",
                                                     "peak_bytes_per_cached_episode", "prefix_cache_peak_bytes",
                                                     "steps_by_draft_heads", "admitted_while_decoding", "mean_occupied_slots")}})

    def ratio(a: str, b: str, key: str = "episode_tokens_per_s") -> float:
        """Median over repetitions of a/b within each repetition."""
        return round(statistics.median(x[key] / y[key] for x, y in zip(runs[a], runs[b])), 3)

    ratios = {}
    for c in concurrencies:
        for name in nocache_drafts:
            ratios[f"cache_over_nocache_{name}_c{c}"] = ratio(f"cache_{name}_c{c}", f"nocache_{name}_c{c}")
            ratios[f"ttft_nocache_over_cache_{name}_c{c}"] = ratio(f"nocache_{name}_c{c}", f"cache_{name}_c{c}", "ttft_median_s")
        for cache in ("cache", "nocache"):
            for name in ("adaptive", "mtp3"):
                if f"{cache}_{name}_c{c}" in runs and f"{cache}_plain_c{c}" in runs:
                    ratios[f"{name}_over_plain_{cache}_c{c}"] = ratio(f"{cache}_{name}_c{c}", f"{cache}_plain_c{c}")
    if len(concurrencies) > 1:
        lo, hi = min(concurrencies), max(concurrencies)
        for name in drafts:
            ratios[f"c{hi}_over_c{lo}_cache_{name}"] = ratio(f"cache_{name}_c{hi}", f"cache_{name}_c{lo}")
    return {"setup": {"episodes": episodes, "turns_per_episode": f"{turns[0]}-{turns[1]} (seeded)", "observation_bytes": "200-2000 (seeded)",
                      "new_tokens_per_turn": new_tokens, "sampling": "T=0.7 top_p=0.95 seed 0", "max_prompt_tokens": max_prompt_tokens,
                      "tool_seconds": tool_seconds, "reps": reps, "concurrency": list(concurrencies),
                      "drafts": list(drafts), "arms_without_prefix_cache": list(nocache_drafts)},
            "arms": med, "ratios": ratios}
