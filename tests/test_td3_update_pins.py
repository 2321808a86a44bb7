"""What one TD3 gradient step must do, checked through ``learner.update`` only:
the target critic's Polyak schedule, the health statistics' values (not just
their order), the non-finite-gradient skip, and a CNN that the critic really
learns from. Each test kills a mutation that the rest of the suite let live."""

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from rllib_av.algorithms.td3 import TD3Config
from rllib_av.algorithms.td3.td3_learner import DISCOUNTS
from test_td3_semantics import ACT, B, DICT_OBS, batch, make_learner, params, same

MODULE = "default_policy"


def update(learner, data):
    """One ``learner.update`` call; its per-module results, read as plain numbers."""
    n = len(data[Columns.REWARDS])
    results = learner.update(batch=MultiAgentBatch({MODULE: SampleBatch(data)}, env_steps=n))
    return {k: v.peek() for k, v in results[MODULE].items()}


def critic_pairs(module):
    """(online, target) parameters of the twin critic."""
    return list(zip(module.critic.parameters(), module.target_critic.parameters()))


def test_target_critic_moves_only_on_every_policy_delay_th_step_by_polyak():
    learner, module = make_learner(policy_delay=3, tau=0.25)
    target0 = params(module.target_critic)
    for step in (1, 2):
        update(learner, batch(seed=step))
        assert same(params(module.target_critic), target0), f"target critic moved at step {step}"
    update(learner, batch(seed=3))
    for (online, target), old in zip(critic_pairs(module), target0):
        torch.testing.assert_close(target, 0.25 * online + 0.75 * old)


def terminal_batch(n=2 * B, seed=0):
    """Every transition terminated: the Bellman target y is the reward itself.
    Rewards far from any untrained critic's output, so y and Q1 differ."""
    data = batch(n, seed, terminated=np.ones(n, bool))
    data[Columns.REWARDS] = np.random.default_rng(seed).uniform(50.0, 150.0, n).astype(np.float32)
    return data


def test_health_statistics_report_the_bellman_targets_and_the_td_error():
    learner, module = make_learner(policy_delay=1000)  # critic steps only
    data = terminal_batch(n=B)  # one gradient step: statistics of one minibatch
    with torch.no_grad():
        out = module.forward_train({k: torch.as_tensor(v) for k, v in data.items()})
    q1, q2 = out["q1_preds"].numpy(), out["q2_preds"].numpy()
    y = data[Columns.REWARDS]
    stats = update(learner, data)
    assert stats["q_target_mean"] == pytest.approx(y.mean(), rel=1e-5)
    assert stats["q_target_max"] == pytest.approx(y.max(), rel=1e-5)
    assert stats["q_target_min"] == pytest.approx(y.min(), rel=1e-5)
    assert stats["q1_mean"] == pytest.approx(q1.mean(), abs=1e-5)
    assert stats["q2_mean"] == pytest.approx(q2.mean(), abs=1e-5)
    td = sorted([np.abs(q1 - y).mean(), np.abs(q2 - y).mean()])  # Q1's, or both critics'
    assert td[0] - 1e-3 <= stats["td_error_abs_mean"] <= td[1] + 1e-3
    assert stats["critic_loss"] == pytest.approx(((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean(),
                                                 rel=1e-4)


def test_a_nonfinite_gradient_skips_the_step_and_is_counted():
    """A finite loss whose gradient is NaN (a test-side hook on one critic weight):
    the step is skipped, the weights stay as they were, and it is counted."""
    learner, module = make_learner(policy_delay=1000)
    weight = next(module.critic.parameters())
    weight.register_hook(lambda grad: torch.full_like(grad, float("nan")))
    critic0 = params(module.critic)
    stats = update(learner, batch())
    assert np.isfinite(stats["critic_loss"])
    assert same(params(module.critic), critic0)
    assert stats["nonfinite_grads"] == 1


def image_batch(n, rng):
    """Dict observations whose only signal is in the image: bright frames earn
    +1, dark ones -1; the state vector and the actions are the same noise for both."""
    bright = rng.random(n) < 0.5
    level = np.where(bright, 200, 50)[:, None, None, None]
    image = np.clip(level + rng.integers(-20, 21, (n, 4, 84, 84)), 0, 255).astype(np.uint8)
    state = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    obs = {"image": image, "state": state}
    return {Columns.OBS: obs, Columns.NEXT_OBS: obs,
            Columns.ACTIONS: rng.uniform(-1, 1, (n, 2)).astype(np.float32),
            Columns.REWARDS: np.where(bright, 1.0, -1.0).astype(np.float32),
            Columns.TERMINATEDS: np.ones(n, bool),  # y = r: a regression on the image
            DISCOUNTS: np.full(n, 0.99, np.float32)}


@pytest.fixture
def one_torch_thread():
    """As training runs (resources.torch_threads: 1); two threads on a busy
    2-core box make this CNN ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_critic_learns_what_only_the_image_shows(one_torch_thread):
    """A critic blind to the image cannot beat the variance of the reward: its
    loss (MSE of both Q heads) stays near 2. One that sees it fits the rewards."""
    torch.manual_seed(0)
    config = (TD3Config().environment(observation_space=DICT_OBS, action_space=ACT)
              .training(train_batch_size_per_learner=16, actor_hiddens=[16],
                        critic_hiddens=[64], image_encoder="nature_cnn", critic_lr=1e-3))
    learner = config.build_learner()
    rng = np.random.default_rng(0)
    for _ in range(6):
        update(learner, image_batch(4 * 16, rng))  # 4 gradient steps per call
    losses = [update(learner, image_batch(16, rng))["critic_loss"] for _ in range(3)]
    assert np.mean(losses) < 0.5, losses

