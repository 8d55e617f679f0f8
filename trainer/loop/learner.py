"""The learner: one optimizer step of GRPO or MOPD (with routing replay) on complete groups of graded
rollouts. It owns the optimizer, the frozen reference policy (KL) and the MOPD teachers; the trainer
hands it groups and gets back the step's statistics.

A multi-turn episode trains every assistant turn with the episode's advantage (RewardEvent.payloads).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from envfarm.stream.events import RewardEvent
from envfarm.trainer.algo.grpo import GRPOConfig, group_advantages, grpo_loss
from envfarm.trainer.algo.mopd import MOPDConfig, mopd_loss, teacher_logprobs
from envfarm.trainer.algo.replay import pack, routing_agreement, sequence_logprobs
from envfarm.trainer.loop import payload
from envfarm.trainer.loop.config import AlgoCfg
from envfarm.trainer.model.policy_model import PolicyModel

Group = list[RewardEvent]


def _teachers(algo: AlgoCfg) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    from envfarm.trainer.model import load_checkpoint, token_logprobs

    out = {}
    for domain, path in algo.teachers.items():
        teacher = load_checkpoint(path)
        out[domain] = lambda tokens, m=teacher: token_logprobs(m, tokens)
    return out


class Learner:
    def __init__(self, model: PolicyModel, algo: AlgoCfg, reference: PolicyModel | None = None) -> None:
        """`reference`: the frozen starting policy, needed only when algo.kl_coef > 0."""
        self.model, self.algo = model, algo
        self.opt = torch.optim.AdamW(model.parameters(), lr=algo.lr, weight_decay=0.0, betas=(0.9, 0.99))
        self.grpo = GRPOConfig(algo.clip_low, algo.clip_high, algo.kl_coef, algo.entropy_coef)
        self.mopd = MOPDConfig(algo.mopd_alpha, algo.mopd_eps_low, algo.mopd_eps_high)
        self.teachers = _teachers(algo) if algo.name == "mopd" else {}
        self.reference = reference.eval() if reference is not None and algo.kl_coef else None

    def state_dict(self) -> dict[str, Any]:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state)

    def update(self, groups: list[Group], group_weights: dict[str, float]) -> dict[str, Any]:
        """One optimizer step on these complete groups; `group_weights` downweights stale groups (default 1).
        Returns the step's statistics, `tokens` being the trained (masked) completion tokens."""
        events = [e for g in groups for e in g]
        if not events:
            return {"loss": 0.0, "tokens": 0}
        rewards = torch.tensor([e.reward for e in events])
        gid = {g: i for i, g in enumerate(dict.fromkeys(e.group_id for e in events))}
        adv = group_advantages(rewards, torch.tensor([gid[e.group_id] for e in events]))
        if self.algo.name == "grpo":  # zero-advantage samples carry no gradient: do not pay for them
            keep = [i for i in range(len(events)) if adv[i] != 0]
            if not keep:
                return {"loss": 0.0, "tokens": 0, "skipped": "no reward variance"}
            events, adv = [events[i] for i in keep], adv[keep]
        rows = [(e, payload.decode(p)) for e in events for p in e.payloads]
        row_adv = torch.cat([adv[i].repeat(len(e.payloads)) for i, e in enumerate(events)])
        kept = [k for k, (_, c) in enumerate(rows) if c.tokens]
        if not kept:
            return {"loss": 0.0, "tokens": 0, "skipped": "no generated tokens"}
        return self._step([rows[k][0] for k in kept], [rows[k][1] for k in kept], row_adv[kept], group_weights)

    def _step(self, events: list[RewardEvent], completions: list[Any], adv: torch.Tensor,
              group_weights: dict[str, float]) -> dict[str, Any]:
        model, algo = self.model, self.algo
        batch = pack(completions, model.config.pad_token_id)
        seq_w = torch.tensor([group_weights.get(e.group_id, 1.0) for e in events])
        agreement = routing_agreement(model, batch)
        logp, entropy, aux = sequence_logprobs(model, batch, replay=algo.routing_replay, with_entropy=bool(algo.entropy_coef),
                                               mtp_weight=algo.mtp_loss_weight)
        if algo.name == "grpo":
            ref = None
            if self.reference is not None:
                with torch.no_grad():
                    ref, _, _ = sequence_logprobs(self.reference, batch, replay=algo.routing_replay)
            loss, m = grpo_loss(logp, batch.behaviour_logp, adv, batch.mask, self.grpo, ref_logp=ref, entropy=entropy, weights=seq_w)
        else:
            t_lp = teacher_logprobs(self.teachers, [e.domain for e in events], batch.tokens)
            loss, m = mopd_loss(logp, t_lp, batch.behaviour_logp, adv, batch.mask, self.mopd, weights=seq_w)
        self.opt.zero_grad(set_to_none=True)
        (loss + aux).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), algo.grad_clip)
        self.opt.step()
        model.update_expert_bias()
        return {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "routing_agreement": round(agreement, 4),
                "tokens": int(batch.mask.sum()), **{k: round(v, 4) for k, v in m.items()}}
