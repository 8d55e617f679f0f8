"""GRPO, MOPD and routing replay: values against hand computation, gradients where they must vanish,
and a bandit that GRPO must actually improve."""

from __future__ import annotations

import copy

import pytest
import torch

from envfarm.errors import EnvfarmError
from envfarm.trainer.algo.grpo import GRPOConfig, group_advantages, grpo_loss, k3_kl
from envfarm.trainer.algo.mopd import MOPDConfig, importance_weights, mopd_loss, teacher_logprobs
from envfarm.trainer.algo.replay import pack, routing_agreement, sequence_logprobs
from envfarm.trainer.model import PolicyModel, micro
from envfarm.trainer.rollout import RolloutEngine, SamplingParams

torch.set_num_threads(1)


def test_group_advantages_normalise_within_each_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.5])
    groups = torch.tensor([7, 7, 7, 3, 3, 3, 9])
    adv = group_advantages(rewards, groups)
    g1 = torch.tensor([1.0, 0.0, 0.0])
    expected = (g1 - g1.mean()) / (g1.std() + 1e-6)
    assert torch.allclose(adv[:3], expected, atol=1e-5)
    g2 = torch.tensor([0.0, 1.0, 1.0])
    assert torch.allclose(adv[3:6], (g2 - g2.mean()) / (g2.std() + 1e-6), atol=1e-5)
    assert adv[6] == 0  # a singleton group has no baseline
    assert torch.all(group_advantages(torch.ones(4), torch.zeros(4)) == 0)  # all solved: no signal
    with pytest.raises(EnvfarmError, match="one reward and one group id"):
        group_advantages(torch.ones(3), torch.zeros(4))


def test_grpo_loss_on_policy_gradient_and_clipping():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([1.0, -2.0])
    loss, _ = grpo_loss(logp, logp.detach(), adv, mask)
    loss.backward()
    # On-policy, ratio = 1: d loss / d logp_t = -A / n_tokens on masked tokens, 0 on padding.
    assert torch.allclose(logp.grad, torch.tensor([[-1 / 3, -1 / 3], [2 / 3, 0.0]]))

    # A positive-advantage token whose ratio is already above 1 + clip_high gets no gradient.
    logp2 = torch.tensor([[0.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.0, 0.0]])  # ratio e ~ 2.7 on token 0, 1 on token 1
    loss2, metrics = grpo_loss(logp2, old, torch.tensor([1.0]), torch.ones(1, 2), GRPOConfig(clip_low=0.2, clip_high=0.28))
    loss2.backward()
    assert logp2.grad[0, 0] == 0 and logp2.grad[0, 1] != 0
    assert metrics["clip_frac"] == pytest.approx(0.5)


def test_grpo_kl_term_needs_reference_and_is_zero_at_reference():
    logp = torch.randn(2, 3)
    with pytest.raises(EnvfarmError, match="ref_logp"):
        grpo_loss(logp, logp, torch.zeros(2), torch.ones(2, 3), GRPOConfig(kl_coef=0.1))
    assert torch.allclose(k3_kl(logp, logp), torch.zeros(2, 3))
    assert (k3_kl(logp, logp + torch.randn(2, 3)) >= 0).all()


def test_grpo_improves_a_bandit():
    """4 arms, arm 2 pays 1; groups of 8 samples; 60 GRPO steps must move most mass to arm 2."""
    torch.manual_seed(0)
    logits = torch.zeros(4, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(60):
        with torch.no_grad():
            arms = torch.multinomial(torch.softmax(logits, -1), 8, replacement=True)
        rewards = (arms == 2).float()
        adv = group_advantages(rewards, torch.zeros(8, dtype=torch.long))
        logp = torch.log_softmax(logits, -1)[arms][:, None]
        loss, _ = grpo_loss(logp, logp.detach(), adv, torch.ones(8, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.softmax(logits, -1)[2] > 0.9


def test_mopd_advantage_weights_and_loss_match_the_formula():
    logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    teacher = torch.tensor([[-0.5, -2.5, -0.5]])
    behaviour = torch.tensor([[-1.0, -2.0, -3.0]])  # token 2: w = e^2.5 ~ 12 -> dropped
    mask = torch.ones(1, 3)
    cfg = MOPDConfig(alpha=0.5, eps_low=0.5, eps_high=2.0)
    loss, metrics = mopd_loss(logp, teacher, behaviour, torch.tensor([2.0]), mask, cfg)
    a = torch.tensor([0.5 + 1.0, -0.5 + 1.0, 0.0 + 1.0])
    w = torch.tensor([1.0, 1.0, 0.0])
    expected = -(w * a * logp.detach()).sum() / 3
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert torch.allclose(logp.grad, -(w * a) / 3)  # the advantage and weight are stop-gradient
    assert metrics["dropped_frac"] == pytest.approx(1 / 3)
    w2 = importance_weights(torch.zeros(4), torch.tensor([0.0, 1.0, -0.5, 2.0]), 0.5, 2.0)
    assert torch.allclose(w2, torch.tensor([1.0, 0.0, float(torch.exp(torch.tensor(0.5))), 0.0]))  # e^-1 < 0.5 and e^-2 dropped
    with pytest.raises(EnvfarmError, match="eps_low"):
        MOPDConfig(eps_low=1.5)


def test_mopd_student_equal_to_teacher_gets_only_outcome_signal():
    logp = torch.randn(2, 4, requires_grad=True)
    loss, _ = mopd_loss(logp, logp.detach(), logp.detach(), torch.zeros(2), torch.ones(2, 4))
    loss.backward()
    assert torch.allclose(logp.grad, torch.zeros(2, 4))


def test_mopd_scores_each_sequence_with_its_domains_teacher():
    tokens = torch.arange(12).view(3, 4)
    teachers = {"code": lambda t: torch.full((t.shape[0], 3), -1.0), "math": lambda t: torch.full((t.shape[0], 3), -2.0)}
    out = teacher_logprobs(teachers, ["math", "code", "math"], tokens)
    assert out[:, 0].tolist() == [-2.0, -1.0, -2.0]
    with pytest.raises(EnvfarmError, match="no MOPD teacher for domain"):
        teacher_logprobs(teachers, ["web"], tokens)


def _rollout(model: PolicyModel):
    engine = RolloutEngine(model)
    prompts = [[256, 100, 101, 102], [256, 40, 41], [256, 7, 8, 9, 10, 11]]
    return engine.generate(prompts, SamplingParams(max_new_tokens=10, temperature=1.0, seed=3)).completions


def test_routing_replay_identical_when_routing_agrees_and_differs_when_it_does_not():
    torch.manual_seed(0)
    model = PolicyModel(micro()).eval()
    completions = _rollout(model)
    batch = pack(completions, model.config.pad_token_id)
    assert batch.routing is not None and batch.mask.sum() == sum(len(c.tokens) for c in completions)
    with torch.no_grad():
        on, _, _ = sequence_logprobs(model, batch, replay=True)
        off, _, _ = sequence_logprobs(model, batch, replay=False)
    m = batch.mask.bool()
    assert routing_agreement(model, batch) == 1.0
    assert torch.allclose(on[m], off[m], atol=1e-5)
    assert torch.allclose(on[m], batch.behaviour_logp[m], atol=1e-4)  # the trainer reproduces the sampler

    drifted = copy.deepcopy(model)  # the trainer's weights after an update the sampler has not seen
    with torch.no_grad():
        for layer in drifted.model.layers:
            if layer.is_moe:
                layer.mlp.gate.weight.add_(torch.randn_like(layer.mlp.gate.weight) * 2.0)
    assert routing_agreement(drifted, batch) < 0.9
    with torch.no_grad():
        on2, _, _ = sequence_logprobs(drifted, batch, replay=True)
        off2, _, _ = sequence_logprobs(drifted, batch, replay=False)
        replayed = drifted(batch.tokens, routing=batch.routing).routing
    assert not torch.allclose(on2[m], off2[m], atol=1e-4)
    rec = batch.routing
    valid = (rec >= 0).all(-1)
    assert torch.equal(replayed[valid], rec[valid])  # the forward pass used exactly the recorded experts


def test_pack_rejects_mismatched_logprobs():
    torch.manual_seed(0)
    c = _rollout(PolicyModel(micro()).eval())[0]
    c.logprobs = c.logprobs[:-1]
    with pytest.raises(EnvfarmError, match="log-probs"):
        pack([c], 258)


def test_mtp_draft_loss_trains_only_the_heads_on_completion_tokens():
    from envfarm.trainer.algo.replay import mtp_draft_loss

    torch.manual_seed(0)
    model = PolicyModel(micro()).train()
    batch = pack(_rollout(model), model.config.pad_token_id)
    out = model(batch.tokens, routing=batch.routing)
    loss = mtp_draft_loss(model, out.hidden, batch)
    assert loss.item() > 0
    loss.backward()
    mtp_grad = sum(p.grad.abs().sum() for p in model.model.mtp_layers.parameters() if p.grad is not None)
    trunk_grad = sum(p.grad.abs().sum() for p in model.model.layers.parameters() if p.grad is not None)
    assert mtp_grad > 0 and trunk_grad == 0  # the heads follow the policy; they do not pull its trunk

    opt = torch.optim.SGD(model.model.mtp_layers.parameters(), lr=0.5)
    before = loss.item()
    for _ in range(20):
        opt.zero_grad()
        loss = mtp_draft_loss(model, model(batch.tokens, routing=batch.routing).hidden, batch)
        loss.backward()
        opt.step()
    assert float(loss) < before  # the heads learn to draft the sampled completions
