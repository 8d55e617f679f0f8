"""Trajectories from `envfarm rollout` as training data for envfarm's policy (rejection-sampling fine-tuning).

`envfarm rollout` writes one JSON line per graded episode of an external model (messages with native tool
calls, observations, reward). They carry no token ids or log-probs of that model, so they cannot enter the
on-policy GRPO loss; what a trainer does with them is distill: keep the episodes that passed (or weigh each by
its reward), render them into the policy's own text protocol, and train the policy to produce the assistant
turns (cross-entropy on assistant tokens only; prompts and tool observations are context, not targets).

- `load_trajectories(path, min_reward=...)`: the episodes worth training on, each rendered as `Demo`: the
  token ids of the whole conversation in the scaffold's text protocol (`render_prompt`'s markers, native
  calls written as `<tool_call>` JSON, which is how the tiny policy calls tools), a target mask over the
  assistant turns and the episode's reward as its weight. Bad files are one `EnvfarmError` naming the line.
- `sft_step(model, optimizer, demos)`: one reward-weighted step on a batch.

    python -m envfarm.trainer.data.trajectories --file qwen.jsonl --steps 50 --out .envfarm/distilled
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from envfarm.agent.protocol import ToolCall
from envfarm.errors import EnvfarmError
from envfarm.trainer.tokenizer import ByteTokenizer

TOKENIZER = ByteTokenizer()


@dataclass
class Demo:
    task_id: str
    tokens: list[int]  # the conversation, BOS first
    target: list[bool]  # per token: an assistant token the policy is trained to produce
    weight: float  # the episode's reward


def _assistant_text(message: dict[str, Any]) -> str:
    """An assistant turn in the text protocol: its content, then each native call as `<tool_call>` JSON."""
    text = message.get("content") or ""
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        args = fn.get("arguments") or "{}"
        try:
            parsed = json.loads(args) if isinstance(args, str) else args
        except json.JSONDecodeError:
            parsed = {"_raw": args}  # a malformed call is still what the model wrote
        text += ToolCall(str(fn.get("name", "")), parsed if isinstance(parsed, dict) else {"_raw": parsed}).render()
    return text


def render_demo(row: dict[str, Any], max_tokens: int = 4096) -> Demo:
    """One trajectory line as a training example in the policy's text protocol (see `render_prompt`)."""
    tokens, target = [TOKENIZER.bos_id], [False]
    for message in row["messages"]:
        role = message.get("role", "")
        body = _assistant_text(message) if role == "assistant" else str(message.get("content") or "")
        head = TOKENIZER.encode(f"<|{'tool' if role == 'tool' else role}|>\n", bos=False)
        text = TOKENIZER.encode(body + "\n", bos=False)
        tokens += head + text
        target += [False] * len(head) + [role == "assistant"] * len(text)
    if len(tokens) > max_tokens:  # keep the head (system prompt, problem) and the end (the fix and finish)
        keep = max_tokens // 4
        tokens, target = tokens[:keep] + tokens[-(max_tokens - keep):], target[:keep] + target[-(max_tokens - keep):]
    return Demo(str(row["task_id"]), tokens, target, float(row.get("reward") or 0.0))


def load_trajectories(path: str | Path, min_reward: float = 1.0, max_tokens: int = 4096) -> list[Demo]:
    """The episodes of a trajectory file with reward >= `min_reward`, rendered; an error if none qualifies."""
    path = Path(path)
    if not path.is_file():
        raise EnvfarmError(f"trajectory file {path} does not exist", "pass the --out file of `envfarm rollout`")
    demos, seen = [], 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ok = isinstance(row, dict) and isinstance(row.get("messages"), list) and isinstance(row.get("task_id"), str)
        except json.JSONDecodeError:
            ok = False
        if not ok:
            raise EnvfarmError(f"{path}:{number} is not a trajectory line (JSON with task_id and messages)",
                               "pass a file written by `envfarm rollout`")
        seen += 1
        if float(row.get("reward") or 0.0) >= min_reward:
            demos.append(render_demo(row, max_tokens))
    if not demos:
        raise EnvfarmError(f"{path}: none of its {seen} trajectories has reward >= {min_reward}",
                           "lower --min-reward, or run more episodes (envfarm rollout --n K)")
    return demos


def sft_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, demos: list[Demo], pad_id: int = TOKENIZER.pad_id) -> float:
    """One reward-weighted cross-entropy step on the demos' assistant tokens; returns the weighted loss."""
    length = max(len(d.tokens) for d in demos)
    ids = torch.full((len(demos), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(demos), length), dtype=torch.float32)
    for i, d in enumerate(demos):
        ids[i, :len(d.tokens)] = torch.tensor(d.tokens)
        mask[i, :len(d.target)] = torch.tensor(d.target, dtype=torch.float32) * d.weight
    out = model(ids[:, :-1])
    nll = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    weights = mask[:, 1:].reshape(-1)
    loss = (nll * weights).sum() / weights.sum().clamp_min(1e-6) + out.aux_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())


def demo_loss(model: torch.nn.Module, demos: list[Demo]) -> float:
    """The mean per-token loss on the demos' assistant tokens, without training (for reports and tests)."""
    total, count = 0.0, 0.0
    with torch.no_grad():
        for d in demos:
            ids = torch.tensor([d.tokens])
            logits = model(ids[:, :-1]).logits[0]
            nll = F.cross_entropy(logits, ids[0, 1:], reduction="none")
            w = torch.tensor(d.target[1:], dtype=torch.float32)
            total, count = total + float((nll * w).sum()), count + float(w.sum())
    return total / max(count, 1.0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from envfarm.trainer.model import load_checkpoint, save_checkpoint
    from envfarm.trainer.paths import TINY_CHECKPOINT

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", required=True, type=Path, help="trajectory JSONL written by envfarm rollout")
    p.add_argument("--init", type=Path, default=TINY_CHECKPOINT, help="checkpoint to start from")
    p.add_argument("--out", type=Path, required=True, help="folder for the fine-tuned checkpoint")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--min-reward", type=float, default=1.0, help="train on episodes with at least this reward")
    args = p.parse_args(argv)
    demos = load_trajectories(args.file, args.min_reward)
    model = load_checkpoint(args.init)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    before = demo_loss(model, demos)
    for step in range(args.steps):
        start = (step * args.batch) % len(demos)
        batch = [demos[(start + i) % len(demos)] for i in range(min(args.batch, len(demos)))]
        loss = sft_step(model, opt, batch)
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss:.3f}", flush=True)
    after = demo_loss(model, demos)
    save_checkpoint(model, args.out)
    report = {"demos": len(demos), "steps": args.steps, "loss_before": before, "loss_after": after,
              "perplexity_after": math.exp(min(after, 50.0))}
    (args.out / "distill_report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    main()
