"""Pretrain the tiny policy (main model + MTP heads jointly) on the standard library's sources.

    python -m envfarm.trainer.pretrain --minutes 10            # resumes automatically from --state
    python -m envfarm.trainer.pretrain --fresh                 # start over

The budget is wall-clock minutes (the machine is shared; steps per minute vary), the learning-rate
schedule follows elapsed time, and a resumable state (weights, optimizer, RNG, elapsed time) is
written every `--save-every` seconds. The final weights go to trainer/checkpoints/tiny/ together with
pretrain_report.json (validation loss vs the unigram baseline, MTP head accuracies).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from envfarm.trainer.data.stdlib_corpus import load_stdlib_corpus, unigram_cross_entropy
from envfarm.trainer.model import PolicyModel, save_checkpoint, tiny
from envfarm.trainer.paths import TINY_CHECKPOINT

DEFAULT_OUT = TINY_CHECKPOINT
DEFAULT_STATE = Path(".envfarm") / "pretrain-tiny" / "state.pt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the final checkpoint goes")
    p.add_argument("--state", type=Path, default=DEFAULT_STATE, help="resumable training state")
    p.add_argument("--fresh", action="store_true", help="ignore an existing state and start over")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--mtp-weight", type=float, default=0.3, help="weight of the mean MTP head loss")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=float, default=90.0, help="seconds between validation passes")
    p.add_argument("--save-every", type=float, default=60.0, help="seconds between resumable saves")
    p.add_argument("--eval-batches", type=int, default=8, help="validation batches of 16 windows each")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.batch < 1 or args.seq_len < 8:
        p.error("need --minutes > 0, --batch >= 1 and --seq-len >= 8")
    return args


def lr_at(progress: float, base: float, warmup: float = 0.03) -> float:
    if progress < warmup:
        return base * max(progress / warmup, 0.02)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup)))))


@torch.no_grad()
def evaluate(model: PolicyModel, batches: list[torch.Tensor], seq_len: int) -> dict[str, float]:
    """Validation main loss (nats/token) and each MTP head's loss and top-1 accuracy."""
    model.eval()
    k = model.num_mtp
    main, heads, accs = [], [[] for _ in range(k)], [[] for _ in range(k)]
    for seq in batches:
        out = model(seq[:, :seq_len])
        main.append(F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), seq[:, 1:seq_len + 1].reshape(-1)).item())
        prev = out.hidden
        pos = torch.arange(seq_len).expand(seq.shape[0], seq_len)
        for h in range(k):
            prev, logits = model.mtp_step(h, prev, seq[:, h + 1:h + 1 + seq_len], pos)
            target = seq[:, h + 2:h + 2 + seq_len]
            heads[h].append(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1)).item())
            accs[h].append((logits.argmax(-1) == target).float().mean().item())
    model.train()
    report = {"val_loss": float(np.mean(main))}
    for h in range(k):
        report[f"mtp{h + 1}_val_loss"] = float(np.mean(heads[h]))
        report[f"mtp{h + 1}_val_top1"] = float(np.mean(accs[h]))
    return report


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    corpus = load_stdlib_corpus()
    config = tiny()
    model = PolicyModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.05)
    rng = np.random.default_rng(args.seed)
    span = args.seq_len + config.num_nextn_predict_layers + 1
    val_batches = [torch.from_numpy(corpus.batch("val", 16, span, np.random.default_rng(1000 + i))) for i in range(args.eval_batches)]
    unigram = unigram_cross_entropy(corpus.train, corpus.val, config.vocab_size)
    budget = args.minutes * 60.0
    step, elapsed, history = 0, 0.0, []

    if args.state.exists() and not args.fresh:
        state = torch.load(args.state, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        step, elapsed, history = state["step"], state["elapsed"], state["history"]
        print(f"resumed from {args.state}: step {step}, {elapsed / 60:.1f} of {args.minutes:.1f} min", flush=True)

    def save_state() -> None:
        args.state.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.state.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng.bit_generator.state,
                    "step": step, "elapsed": elapsed, "history": history}, tmp)
        tmp.replace(args.state)

    print(f"tiny policy: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params; train {len(corpus.train) / 1e6:.1f}M "
          f"bytes, val {len(corpus.val) / 1e6:.2f}M bytes ({len(corpus.val_files)} files); unigram val loss {unigram:.3f}",
          flush=True)
    model.train()
    last_eval = last_save = time.monotonic()
    started = time.monotonic() - elapsed
    tokens_seen = 0
    window_start = time.monotonic()
    while elapsed < budget:
        seq = torch.from_numpy(corpus.batch("train", args.batch, span, rng))
        for group in opt.param_groups:
            group["lr"] = lr_at(elapsed / budget, args.lr)
        out = model(seq[:, :args.seq_len])
        main_loss = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), seq[:, 1:args.seq_len + 1].reshape(-1))
        mtp = model.mtp_losses(out.hidden, seq)
        loss = main_loss + args.mtp_weight * torch.stack(mtp).mean() + out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        model.update_expert_bias()
        step += 1
        tokens_seen += args.batch * args.seq_len
        now = time.monotonic()
        elapsed = now - started
        if step % 10 == 0:
            rate = tokens_seen / (now - window_start)
            print(f"step {step:5d}  {elapsed / 60:5.1f}/{args.minutes:.1f} min  loss {main_loss.item():.3f}  "
                  f"mtp {' '.join(f'{m.item():.2f}' for m in mtp)}  {rate:,.0f} tok/s", flush=True)
            tokens_seen, window_start = 0, now
        if now - last_eval > args.eval_every:
            report = evaluate(model, val_batches, args.seq_len)
            history.append({"step": step, "elapsed_s": round(elapsed, 1), **report})
            print(f"  val loss {report['val_loss']:.3f} (unigram {unigram:.3f})  mtp top1 "
                  + " ".join(f"{report[f'mtp{h + 1}_val_top1']:.2f}" for h in range(model.num_mtp)), flush=True)
            last_eval = time.monotonic()
        if now - last_save > args.save_every:
            save_state()
            last_save = time.monotonic()

    save_state()
    final = evaluate(model, val_batches, args.seq_len)
    report = {"steps": step, "minutes": round(elapsed / 60, 2), "batch": args.batch, "seq_len": args.seq_len,
              "mtp_weight": args.mtp_weight, "unigram_val_loss": unigram, **final,
              "val_loss_units": "nats per byte token", "history": history,
              "corpus": "CPython stdlib sources, 5% of files (by path hash) held out"}
    model.eval()
    save_checkpoint(model, args.out)
    (args.out / "pretrain_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"done: val loss {final['val_loss']:.3f} vs unigram {unigram:.3f}; checkpoint in {args.out}", flush=True)
    return report


if __name__ == "__main__":
    main()
