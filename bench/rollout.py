"""Rollout speed with and without MTP speculative decoding on the pretrained tiny policy.

    python -m bench.rollout [--new-tokens 128] [--reps 3] [--prompts 8]

Modes: plain, fixed MTP with 1-3 heads, and adaptive (heads per step from measured costs and acceptance,
trainer/rollout/draft_policy.py; one engine for the whole run, so its cost model carries over between
calls as in a rollout worker). Regimes: greedy batch 1 and batch 8 (128 tokens), sampled T=0.7 batch 1,
and the RL demo's shape: 32 completions of 12 tokens at T=1.0 in one batch.

Same process, same prompts (Python code from the held-out stdlib files), modes interleaved within
each repetition so background load hits all of them alike; medians over repetitions. Writes
bench/results/rollout.json: tokens/s per mode end to end (prefill included) and for the decoding
phase alone (after the first token, as speculative-decoding results are usually quoted: the prefill
is the same work in every mode), speedup vs plain decoding on both, mean acceptance length, whether
greedy outputs are identical, peak RSS, KV-cache bytes per token for SWA vs GA layers, and the MoE
layer's two dispatch kernels (grouped GEMM vs per-expert loop) by token count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

from bench.common import machine_load, machine_notes
from envfarm.trainer.data.stdlib_corpus import is_validation, stdlib_files, stdlib_root
from envfarm.trainer.model import load_checkpoint
from envfarm.trainer.rollout import TINY_CHECKPOINT, RolloutEngine, SamplingParams

RESULTS = Path(__file__).parent / "results" / "rollout.json"
MODES = [("plain", None, 0), ("mtp1", "mtp", 1), ("mtp2", "mtp", 2), ("mtp3", "mtp", 3), ("adaptive", "adaptive", 3)]


def code_prompts(count: int, length: int) -> list[list[int]]:
    """A `length`-byte window starting at a line break near the middle of each of `count` validation files."""
    root = stdlib_root()
    files = [p for p in stdlib_files(root) if is_validation(p, root)]  # sorted by path
    prompts = []
    for path in files:
        data = path.read_bytes()
        if len(data) < 4 * length:
            continue
        start = data.index(b"\n", len(data) // 2) + 1
        prompts.append([256] + list(data[start:start + length]))
        if len(prompts) == count:
            break
    return prompts


def run_mode(engine: RolloutEngine, prompts: list[list[int]], params: SamplingParams, draft, heads: int,
             batch: int) -> dict:
    tokens, steps, accept_sum, outputs, decode_tokens, decode_seconds = 0, 0, 0.0, [], 0, 0.0
    heads_used: dict[int, int] = {}
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(0, len(prompts), batch):
        out = engine.generate(prompts[i:i + batch], params, draft=draft, num_draft=heads or None)
        for k, count in enumerate(out.stats["steps_by_draft_heads"]):
            heads_used[k] = heads_used.get(k, 0) + count
        tokens += sum(len(t) for t in out.tokens)
        steps += out.stats["steps"]
        accept_sum += out.stats["mean_acceptance_length"] * out.stats["steps"]
        decode_tokens += out.stats["decode_tokens"]
        decode_seconds += out.stats["decode_seconds"]
        outputs.extend(out.tokens)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"tokens_per_s": tokens / seconds, "tokens_per_cpu_s": tokens / cpu_seconds,
            "decode_tokens_per_s": decode_tokens / decode_seconds,
            "acceptance_length": accept_sum / max(1, steps), "outputs": outputs, "steps_by_draft_heads": heads_used}


def _merge(parts: list[dict]) -> dict:
    """Several calls of one mode as one measurement: rates averaged, outputs and head counts joined."""
    if len(parts) == 1:
        return parts[0]
    merged = {key: statistics.fmean(part[key] for part in parts) for key in ("tokens_per_s", "tokens_per_cpu_s", "decode_tokens_per_s", "acceptance_length")}
    merged["outputs"] = parts[0]["outputs"]
    used: dict[int, int] = {}
    for p in parts:
        for k, count in p["steps_by_draft_heads"].items():
            used[k] = used.get(k, 0) + count
    merged["steps_by_draft_heads"] = used
    return merged


def moe_dispatch(model, token_counts: list[int], reps: int) -> dict:
    """One MoE layer of the model, no grad: the grouped GEMM against the per-expert loop, interleaved."""
    from envfarm.trainer.model.moe import HAS_GROUPED_MM
    layer = next(layer.mlp for layer in model.model.layers if layer.is_moe)
    out = {"grouped_mm_available": HAS_GROUPED_MM,
           "grouped_mm_max_tokens": layer.grouped_mm_max_rows_per_expert * layer.n_experts // layer.top_k}
    if not HAS_GROUPED_MM:
        return out
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n in token_counts:
            x = torch.randn(1, n, model.config.hidden_size, generator=gen)
            times: dict[str, list[float]] = {"grouped_mm": [], "loop": []}
            flat = x.reshape(n, -1)
            scores = layer.gate(flat)
            ids = layer.route(scores, None)
            weights = scores.gather(1, ids)
            kernels = {"grouped_mm": layer._grouped_mm_dispatch, "loop": layer._grouped_dispatch}
            for _ in range(reps):
                for name, kernel in kernels.items():
                    start = time.perf_counter()
                    kernel(flat, ids, weights)
                    times[name].append(time.perf_counter() - start)
            g, loop = statistics.median(times["grouped_mm"]), statistics.median(times["loop"])
            out[str(n)] = {"grouped_mm_us": round(g * 1e6, 1), "loop_us": round(loop * 1e6, 1),
                           "loop_over_grouped_mm": round(loop / g, 2)}
    return out


def kv_bytes_per_token(model, contexts: list[int]) -> dict:
    """Allocated KV bytes per cached token, summed over the layers of each kind, after a prefill."""
    out = {}
    for n in contexts:
        cache = model.new_cache(1, slack=4)
        tokens = torch.randint(0, 256, (1, n))
        with torch.no_grad():  # chunked prefill, as an engine does: no n x n score matrix
            for start in range(0, n, 256):
                chunk = tokens[:, start:start + 256]
                model(chunk, positions=torch.arange(start, start + chunk.shape[1])[None], cache=cache)
        swa = sum(c.nbytes() for c, layer in zip(cache.layers, model.model.layers) if layer.sliding)
        ga = sum(c.nbytes() for c, layer in zip(cache.layers, model.model.layers) if not layer.sliding)
        out[str(n)] = {"swa_bytes": swa, "ga_bytes": ga, "swa_bytes_per_token": swa / n, "ga_bytes_per_token": ga / n}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=TINY_CHECKPOINT)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--prompt-bytes", type=int, default=256)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--short-new-tokens", type=int, default=12, help="the RL demo's completion length")
    p.add_argument("--short-batch", type=int, default=32, help="the RL demo's completions per call")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--sections", default="classic,multiturn",
                   help="classic (single calls: the regimes above) and/or multiturn (agent episodes, bench/multiturn.py); "
                        "a section not run keeps its entry from the existing results file")
    p.add_argument("--mt-reps", type=int, default=1)
    p.add_argument("--mt-episodes", type=int, default=8)
    p.add_argument("--mt-new-tokens", type=int, default=16, help="new tokens per assistant turn")
    p.add_argument("--mt-turns", default="10,12", help="turns per episode, drawn per episode from this range")
    p.add_argument("--mt-max-prompt-tokens", type=int, default=4096)
    p.add_argument("--mt-tool-seconds", type=float, default=0.1)
    p.add_argument("--mt-drafts", default="plain,mtp3,adaptive", help="draft modes of the multi-turn arms")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sections = set(args.sections.split(","))
    model = load_checkpoint(args.checkpoint)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    report = classic(args, model) if "classic" in sections else {k: v for k, v in previous.items() if k != "multiturn"}
    if "multiturn" in sections:
        from bench.multiturn import multiturn
        load_at_start = machine_load()
        lo, hi = (int(x) for x in args.mt_turns.split(","))
        section = multiturn(model, args.mt_reps, args.mt_episodes, args.mt_new_tokens, args.mt_max_prompt_tokens,
                            args.mt_tool_seconds, turns=(lo, hi), drafts=tuple(args.mt_drafts.split(",")))
        report["multiturn"] = {**section, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                               "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "machine": {**machine_notes(load_at_start), "platform": platform.platform(), "torch_threads": args.threads}}
    elif "multiturn" in previous:
        report["multiturn"] = previous["multiturn"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)
    if "multiturn" in report:
        print(json.dumps(report["multiturn"]["ratios"], indent=1))
    return report


def classic(args: argparse.Namespace, model) -> dict:
    """The single-call regimes: every mode on the same prompts, interleaved per repetition."""
    load_at_start = machine_load()
    engine = RolloutEngine(model)
    prompts = code_prompts(args.prompts, args.prompt_bytes)
    greedy = SamplingParams(max_new_tokens=args.new_tokens, temperature=0)
    sampled = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.7, top_p=0.95, seed=0)
    short = SamplingParams(max_new_tokens=args.short_new_tokens, temperature=1.0, seed=0)
    short_prompts = [p[:64] for p in prompts]  # demo-sized prompts, each repeated as a group would be
    short_prompts = [short_prompts[i % len(short_prompts)] for i in range(args.short_batch)]
    engine.generate(prompts[:1], greedy, draft="mtp")  # warm-up

    results: dict = {}
    regimes = (("greedy_batch1", greedy, 1, prompts), ("greedy_batch8", greedy, 8, prompts), ("t0.7_batch1", sampled, 1, prompts),
               (f"t1.0_batch{args.short_batch}_{args.short_new_tokens}tokens", short, args.short_batch, short_prompts))
    for label, params, batch, regime_prompts in regimes:
        runs: dict[str, list[dict]] = {name: [] for name, _, _ in MODES}
        # Short calls are cheap: more of them, so each timing covers about as much work as a long one.
        calls = 1 if params.max_new_tokens >= 64 else max(1, 16 * 128 // (params.max_new_tokens * batch))
        for rep in range(args.reps):
            for name, draft, heads in MODES:
                rep_runs = [run_mode(engine, regime_prompts, params, draft, heads, batch) for _ in range(calls)]
                runs[name].append(_merge(rep_runs))
                print(f"{label} rep {rep + 1}/{args.reps} {name}: {runs[name][-1]['tokens_per_s']:.1f} tok/s "
                      f"({runs[name][-1]['tokens_per_cpu_s']:.1f} per CPU-s), "
                      f"acceptance {runs[name][-1]['acceptance_length']:.2f}", flush=True)
        base = statistics.median(r["tokens_per_s"] for r in runs["plain"])
        cpu_base = statistics.median(r["tokens_per_cpu_s"] for r in runs["plain"])
        decode_base = statistics.median(r["decode_tokens_per_s"] for r in runs["plain"])
        section = {}
        for name, _, _ in MODES:
            tps = statistics.median(r["tokens_per_s"] for r in runs[name])
            cpu_tps = statistics.median(r["tokens_per_cpu_s"] for r in runs[name])
            decode_tps = statistics.median(r["decode_tokens_per_s"] for r in runs[name])
            section[name] = {"tokens_per_s_median": round(tps, 2),
                             "tokens_per_s_all": [round(r["tokens_per_s"], 2) for r in runs[name]],
                             "speedup_vs_plain": round(tps / base, 3),
                             "tokens_per_cpu_s_median": round(cpu_tps, 2),
                             "speedup_vs_plain_cpu_time": round(cpu_tps / cpu_base, 3),
                             "decode_tokens_per_s_median": round(decode_tps, 2),
                             "decode_speedup_vs_plain": round(decode_tps / decode_base, 3),
                             "mean_acceptance_length": round(statistics.median(r["acceptance_length"] for r in runs[name]), 3)}
            if name == "adaptive":
                used: dict[int, int] = {}
                for r in runs[name]:
                    for k, count in r["steps_by_draft_heads"].items():
                        used[k] = used.get(k, 0) + count
                section[name]["steps_by_draft_heads"] = {str(k): used[k] for k in sorted(used)}
                section[name]["speedup_vs_mtp3"] = round(tps / statistics.median(r["tokens_per_s"] for r in runs["mtp3"]), 3)
            if params.greedy:
                section[name]["greedy_output_identical_to_plain"] = all(
                    r["outputs"] == runs["plain"][0]["outputs"] for r in runs[name])
        results[label] = section

    rollout_peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report = {
        "benchmark": "rollout", "checkpoint": str(args.checkpoint),
        "setup": {"prompts": len(prompts), "prompt_bytes": args.prompt_bytes, "new_tokens": args.new_tokens,
                  "reps": args.reps, "torch_threads": args.threads, "dtype": "float32",
                  "prompt_source": "middle of held-out CPython stdlib files (byte tokens)"},
        "results": results,
        "kv_cache": kv_bytes_per_token(model, [256, 1024, 4096]),
        "moe_dispatch": moe_dispatch(model, [1, 4, 32, 257, 2048], reps=max(5, args.reps)),
        "peak_rss_mb": rollout_peak_rss_mb,  # whole process (Python + torch + model), after all rollouts
        "peak_rss_mb_after_kv_probe": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": {**machine_notes(load_at_start), "platform": platform.platform(),
                    "method": "modes interleaved per repetition so load affects them alike; tokens per CPU-second "
                              "of this single-threaded process (speedup_vs_plain_cpu_time) is less sensitive to "
                              "load than wall-clock tokens/s"},
        "reference": {"acceptance_length": "2.8-3.8 (MiMo-V2-Flash, 3 MTP heads, GPUs)", "speedup": "1.82-2.70x"},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(json.dumps({k: {m: (v["tokens_per_s_median"], v["speedup_vs_plain"], v["speedup_vs_plain_cpu_time"],
                              v["decode_speedup_vs_plain"], v["mean_acceptance_length"])
                          for m, v in s.items()} for k, s in results.items()}, indent=1))
    return report


if __name__ == "__main__":
    main()
