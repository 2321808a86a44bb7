"""training.actor_preactivation_l2: a bound-seeking actor keeps a finite pre-tanh
action (it can still learn its way back), and the logged actor loss stays -mean Q1."""

import pytest
import torch

from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from rllib_av.algorithms.td3 import TD3Config
from test_td3_semantics import ACT, B, OBS, batch


def uphill_q1(features, action):
    """Q1 = sum of the action, for any state: the best action is the upper bound."""
    return action.sum(-1)


def actor_on_uphill_critic(l2):
    config = (TD3Config()
              .environment(observation_space=OBS, action_space=ACT)
              .training(train_batch_size_per_learner=B, actor_hiddens=[16], critic_hiddens=[16],
                        policy_delay=1, actor_lr=3e-2, actor_preactivation_l2=l2))
    learner = config.build_learner()
    module = learner.module["default_policy"].unwrapped()
    module.critic.q1 = uphill_q1  # what the actor step maximizes
    return learner, module


def update(learner, data):
    n = len(data[Columns.REWARDS])
    return learner.update(batch=MultiAgentBatch({"default_policy": SampleBatch(data)},
                                                env_steps=n))["default_policy"]


def mean_abs_pre_tanh(l2, updates=150):
    learner, module = actor_on_uphill_critic(l2)
    data = batch(n=B * updates)
    update(learner, data)
    with torch.no_grad():
        return module.actor.pre_tanh(torch.as_tensor(data[Columns.OBS])).abs().mean().item()


def test_the_penalty_keeps_the_pre_tanh_action_finite():
    # Unpenalized, the pre-tanh action keeps climbing (tanh'(x) -> 0, never 0);
    # penalized, it settles where 2 * l2 * x = tanh'(x) * dQ/da: x ~ 1.6 here.
    assert mean_abs_pre_tanh(0.0) > 4.0
    assert mean_abs_pre_tanh(0.1) < 2.0


def test_logged_actor_loss_stays_minus_mean_q1():
    learner, module = actor_on_uphill_critic(l2=10.0)
    data = batch(n=B)
    with torch.no_grad():
        pre = module.actor.pre_tanh(torch.as_tensor(data[Columns.OBS]))
    results = update(learner, data)
    # A large penalty, yet the logged loss is the Q1 part alone (as critic_l2
    # stays out of critic_loss).
    expected = -uphill_q1(None, torch.tanh(pre)).mean().item()
    assert results["actor_loss"].peek() == pytest.approx(expected, abs=1e-5)
