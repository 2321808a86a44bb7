"""TD3's update semantics on hand-made batches (no env, no Ray cluster)."""

import gymnasium as gym
import numpy as np
import pytest
import torch
import tree

from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from rllib_av.algorithms.td3 import TD3Config
from rllib_av.algorithms.td3.td3_learner import polyak_update, td3_targets
from rllib_av.replay.sampling import DISCOUNTS

OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
B = 8


DICT_OBS = gym.spaces.Dict({  # as the RLModule sees it: frames stacked
    "image": gym.spaces.Box(0, 255, (4, 84, 84), np.uint8),
    "state": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
})


def make_learner(obs_space=OBS, **training):
    config = (TD3Config()
              .environment(observation_space=obs_space, action_space=ACT)
              .training(train_batch_size_per_learner=B, actor_hiddens=[16], critic_hiddens=[16],
                        replay_buffer_config={"capacity": 1000}, **training))
    learner = config.build_learner()
    return learner, learner.module["default_policy"].unwrapped()


def batch(n=B, seed=0, terminated=None):
    rng = np.random.default_rng(seed)
    return {
        Columns.OBS: rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        Columns.ACTIONS: rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        Columns.REWARDS: rng.normal(size=n).astype(np.float32),
        Columns.NEXT_OBS: rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        Columns.TERMINATEDS: np.zeros(n, bool) if terminated is None else terminated,
        DISCOUNTS: np.full(n, 0.99, np.float32),
    }


def update(learner, data):
    learner.update(batch=MultiAgentBatch({"default_policy": SampleBatch(data)},
                                         env_steps=len(data[Columns.REWARDS])))


def params(net):
    return [p.detach().clone() for p in net.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


class ConstCritic(torch.nn.Module):
    """Twin critic stand-in returning fixed Q1', Q2'."""

    def __init__(self, q1, q2):
        super().__init__()
        self.q1_value, self.q2_value = torch.tensor(q1), torch.tensor(q2)

    def forward(self, obs, action):
        return self.q1_value, self.q2_value


class ConstActor(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, obs):
        return torch.full((obs.shape[0], 2), self.value)


def test_target_is_min_of_twins_and_masks_only_termination():
    _, module = make_learner()
    module.target_critic = ConstCritic([1.0, 5.0, -2.0, 3.0], [2.0, 4.0, -1.0, 7.0])
    data = {Columns.NEXT_OBS: torch.zeros(4, 3)}
    q_next = module.forward_target(data, policy_noise=0.2, noise_clip=0.5)["q_next"]
    assert q_next.tolist() == [1.0, 4.0, -2.0, 3.0]

    rewards = torch.tensor([0.5, 0.5, 0.5, 0.5])
    discounts = torch.tensor([0.9, 0.9, 0.81, 0.9])
    terminated = torch.tensor([False, True, False, False])
    y = td3_targets(rewards, discounts, terminated, q_next)
    assert torch.allclose(y, torch.tensor([0.5 + 0.9 * 1.0, 0.5, 0.5 + 0.81 * -2.0, 0.5 + 0.9 * 3.0]))


def test_smoothing_noise_is_clipped_to_noise_clip_and_action_range():
    _, module = make_learner()
    module.target_critic = ConstCritic([0.0], [0.0])
    module.target_actor = ConstActor(0.8)
    torch.manual_seed(0)
    out = module.forward_target({Columns.NEXT_OBS: torch.zeros(20_000, 3)},
                                policy_noise=10.0, noise_clip=0.5)
    actions = out[Columns.ACTIONS]
    assert actions.min().item() == pytest.approx(0.3)  # 0.8 - noise_clip
    assert actions.max().item() == 1.0  # action range, not 0.8 + 0.5
    # Noise of std 10 clipped at +-0.5: nearly all samples sit on a clip edge.
    assert (actions == 1.0).float().mean() > 0.4


def test_truncation_bootstraps_termination_does_not():
    """End to end through the learner: a terminated transition's target is r."""
    learner, module = make_learner(policy_delay=1000, policy_noise=0.0)
    data = batch(terminated=np.array([True] * 4 + [False] * 4))
    tensors = {k: torch.as_tensor(v) for k, v in data.items()}
    config = learner.config.get_config_for_module("default_policy")
    fwd = module.forward_train(tensors)
    _, y = learner._critic_loss("default_policy", config, tensors, fwd)
    q_next = module.forward_target(tensors, 0.0, 0.0)["q_next"]
    r = tensors[Columns.REWARDS]
    assert torch.allclose(y[:4], r[:4])
    assert torch.allclose(y[4:], r[4:] + 0.99 * q_next[4:])


def test_actor_and_targets_update_every_policy_delay_gradient_steps():
    learner, module = make_learner(policy_delay=3, tau=0.5)
    actor0, critic0, target0 = params(module.actor), params(module.critic), params(module.target_actor)
    update(learner, batch())  # critic step 1
    assert not same(params(module.critic), critic0)
    assert same(params(module.actor), actor0) and same(params(module.target_actor), target0)
    update(learner, batch(seed=1))  # critic step 2
    assert same(params(module.actor), actor0)
    update(learner, batch(seed=2))  # critic step 3: actor + targets
    assert not same(params(module.actor), actor0)
    assert not same(params(module.target_actor), target0)
    # Counted in gradient steps: one call with 6 minibatches = 6 critic, 2 actor steps.
    results = learner.update(batch=MultiAgentBatch(
        {"default_policy": SampleBatch(batch(n=6 * B, seed=3))}, env_steps=6 * B))
    stats = results["default_policy"]  # lifetime sums: this call's share
    assert stats["num_updates_lifetime"].peek() == 6
    assert stats["num_actor_updates_lifetime"].peek() == 2
    assert learner._critic_steps["default_policy"] == 9


def test_polyak_average():
    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    s, t = params(source), params(target)
    polyak_update(source, target, tau=0.1)
    for new, old_s, old_t in zip(target.parameters(), s, t):
        assert torch.allclose(new, 0.1 * old_s + 0.9 * old_t)


def dict_batch(n=B):
    data = batch(n)
    rng = np.random.default_rng(1)
    for key in (Columns.OBS, Columns.NEXT_OBS):
        data[key] = {"image": rng.integers(0, 256, (n, 4, 84, 84), dtype=np.uint8),
                     "state": data[key]}
    return data


@pytest.mark.parametrize("obs_space", [OBS, DICT_OBS], ids=["box", "dict"])
def test_actor_gradients_never_reach_critic_or_encoder_weights(obs_space):
    learner, module = make_learner(obs_space)
    config = learner.config.get_config_for_module("default_policy")
    critic0, encoder0 = params(module.critic), params(module.encoder)
    data = batch() if obs_space is OBS else dict_batch()
    tensors = tree.map_structure(torch.as_tensor, data)
    features = module.forward_train(tensors)["features"].detach()
    actor0 = params(module.actor)
    learner._actor_step("default_policy", config, features)
    assert not same(params(module.actor), actor0)
    assert same(params(module.critic), critic0) and same(params(module.encoder), encoder0)
    assert all(p.grad is None for p in module.critic.parameters())
    assert all(p.grad is None for p in module.encoder.parameters())


def test_health_statistics_are_reported_on_update():
    learner, _ = make_learner(policy_delay=1)
    stats = learner.update(batch=MultiAgentBatch(
        {"default_policy": SampleBatch(batch(n=2 * B))}, env_steps=2 * B))["default_policy"]
    for name in ("q_actor_mean", "q_actor_max", "q_actor_min", "q_actor_std", "q_target_mean",
                 "q_target_max", "q_target_min", "q1_mean", "q2_mean", "critic_loss",
                 "actor_loss", "grad_norm_actor", "grad_norm_critic", "td_error_abs_mean"):
        assert np.isfinite(stats[name].peek()), name
    assert stats["q_actor_max"].peek() >= stats["q_actor_mean"].peek() >= stats["q_actor_min"].peek()
    assert stats["actor_loss"].peek() == pytest.approx(-stats["q_actor_mean"].peek(), rel=1e-5)


def test_gradient_clipping_is_per_network_and_reports_pre_clip_norm():
    learner, module = make_learner(critic_grad_clip=1e-3, policy_delay=1)
    stats = learner.update(batch=MultiAgentBatch(
        {"default_policy": SampleBatch(batch())}, env_steps=B))["default_policy"]

    def grad_norm(net):
        return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters()])).item()

    # The critic's gradients were clipped before its step; the reported norm is pre-clip.
    assert grad_norm(module.critic) == pytest.approx(1e-3, rel=1e-3)
    assert stats["grad_norm_critic"].peek() > 1e-2
    # The actor has no clip: its gradients are untouched and equal the reported norm.
    assert grad_norm(module.actor) == pytest.approx(stats["grad_norm_actor"].peek(), rel=1e-4)


def test_nonfinite_loss_skips_the_step_and_is_counted():
    learner, module = make_learner(policy_delay=1000)
    data = batch()
    data[Columns.REWARDS][0] = np.nan
    critic0 = params(module.critic)
    stats = learner.update(batch=MultiAgentBatch(
        {"default_policy": SampleBatch(data)}, env_steps=B))["default_policy"]
    assert stats["nonfinite_loss"].peek() == 1
    assert same(params(module.critic), critic0)
