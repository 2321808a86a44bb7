"""The TD3 RLModule's acting and target paths, through its public forward
methods: exploration (uniform warm-up, then mu(s) plus clipped Gaussian noise),
inference (mu(s) exactly), target smoothing clipped at both ends of the action
box, and the inference-only copy EnvRunners get."""

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from rllib_av.algorithms.td3 import TD3Config
from test_td3_semantics import ACT, DICT_OBS, OBS, ConstActor, ConstCritic, dict_batch

WARMUP = 100
N = 20_000  # rows per forward: enough for tight statistics


def module(exploration_noise=0.1, obs_space=OBS):
    config = (TD3Config().environment(observation_space=obs_space, action_space=ACT)
              .training(actor_hiddens=[16], critic_hiddens=[16],
                        num_steps_sampled_before_learning_starts=WARMUP,
                        exploration_noise=exploration_noise))
    return config.build_learner().module["default_policy"].unwrapped()


def obs(n=N, seed=0):
    return {Columns.OBS: torch.as_tensor(np.random.default_rng(seed).uniform(-1, 1, (n, 3)),
                                         dtype=torch.float32)}


def mu(m, batch):
    return m.forward_inference(batch)[Columns.ACTIONS]


def test_inference_is_the_deterministic_policy():
    m, batch = module(), obs(8)
    torch.testing.assert_close(mu(m, batch), m.actor(m.encoder(batch[Columns.OBS])))
    torch.testing.assert_close(mu(m, batch), mu(m, batch))
    assert mu(m, batch).shape == (8, 2)


def test_warm_up_actions_are_uniform_over_the_action_box():
    m, batch = module(), obs()
    torch.manual_seed(0)
    for t in (0, WARMUP - 1):
        a = m.forward_exploration(batch, t=t)[Columns.ACTIONS]
        assert a.shape == (N, 2)
        assert -1.0 <= a.min() < -0.99 and 0.99 < a.max() <= 1.0
        assert a.mean().abs() < 0.02
        assert a.std().item() == pytest.approx(1 / np.sqrt(3), abs=0.01)  # U(-1, 1)


@pytest.mark.parametrize("t", [WARMUP, 10 * WARMUP, None])
def test_after_warm_up_actions_are_mu_plus_gaussian_noise(t):
    m, batch = module(exploration_noise=0.05), obs()
    torch.manual_seed(0)
    noise = m.forward_exploration(batch, t=t)[Columns.ACTIONS] - mu(m, batch)
    assert noise.mean().abs() < 0.002
    assert noise.std().item() == pytest.approx(0.05, rel=0.03)


def test_exploration_noise_is_clipped_to_the_action_box():
    m, batch = module(exploration_noise=10.0), obs()
    torch.manual_seed(0)
    a = m.forward_exploration(batch, t=WARMUP)[Columns.ACTIONS]
    assert a.min() == -1.0 and a.max() == 1.0
    assert (a.abs() == 1.0).float().mean() > 0.9  # std 10: nearly every sample hits an edge


@pytest.mark.parametrize("target_action", [0.8, -0.8])
def test_smoothed_target_actions_stay_in_the_action_box_at_both_ends(target_action):
    m = module()
    m.target_critic = ConstCritic([0.0], [0.0])
    m.target_actor = ConstActor(target_action)
    torch.manual_seed(0)
    out = m.forward_target({Columns.NEXT_OBS: torch.zeros(N, 3)}, policy_noise=10.0, noise_clip=0.5)
    a = out[Columns.ACTIONS]
    near, far = (1.0, 0.3) if target_action > 0 else (-1.0, -0.3)
    assert a.abs().max().item() == 1.0
    assert (a == near).float().mean() > 0.4  # clipped at the box
    assert min(a.min().item(), a.max().item(), key=lambda v: abs(v - far)) == pytest.approx(far)


@pytest.mark.parametrize("obs_space", [OBS, DICT_OBS], ids=["box", "dict"])
def test_env_runners_get_the_actor_and_nothing_else(obs_space):
    """With a Dict observation the target encoder (a CNN) has weights of its own."""
    learner_module = module(obs_space=obs_space)
    state = learner_module.get_state(inference_only=True)
    assert not [k for k in state if k.startswith(("critic", "target_"))], list(state)
    runner_module = type(learner_module)(observation_space=obs_space, action_space=ACT,
                                         inference_only=True,
                                         model_config=learner_module.model_config)
    assert not hasattr(runner_module, "critic")
    runner_module.set_state(state)
    batch = {Columns.OBS: obs(8)[Columns.OBS] if obs_space is OBS else
             {k: torch.as_tensor(v) for k, v in dict_batch(8)[Columns.OBS].items()}}
    torch.testing.assert_close(mu(runner_module, batch), mu(learner_module, batch))
