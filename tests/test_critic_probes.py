"""The critic probes' parts that need no training: when the loop probes, and
the returns the overestimation probe compares Q with, on horizons longer than
an episode."""

import math

import gymnasium as gym
import numpy as np
import pytest

from rllib_av.critic_probes import ProbeSchedule, make_env_factory
from rllib_av.health.overestimation import (
    NEGLIGIBLE_TAIL, discounted_returns, returns_with_tail, tail_horizon,
)
from rllib_av.run_config import load_run_config


def test_the_schedule_probes_every_n_iterations_past_each_mark_and_at_the_end():
    schedule = ProbeSchedule(every_iters=0, at_steps=[500, 1000])
    due = [schedule.due(i, steps, done=steps >= 1500)
           for i, steps in enumerate([256, 512, 576, 1088, 1200, 1536], 1)]
    assert due == [False, True, False, True, False, True]
    every = ProbeSchedule(every_iters=3)
    assert [every.due(i, 64 * i, done=False) for i in range(1, 7)] == [
        False, False, True, False, False, True]


def test_a_terminated_rollout_has_exact_returns():
    low, high, usable = returns_with_tail([1.0, 1.0, 1.0], 0.5, True, (-10.0, 10.0))
    assert np.allclose(low, [1.75, 1.5, 1.0]) and np.allclose(high, low) and usable.all()


def test_a_rollout_cut_short_has_its_missing_tail_bounded_by_the_reward_range():
    """gamma 0.999 and 200-step episodes: no state's rest of the return weighs
    little inside the episode (the probe used to drop every state, silently).
    With a declared range each return is an interval instead."""
    gamma, rewards = 0.999, [-1.0] * 200
    assert not returns_with_tail(rewards, gamma, False, None)[2].any()
    low, high, usable = returns_with_tail(rewards, gamma, False, (-16.27 / 0.001, 0.0))
    assert usable.all()
    g = discounted_returns(rewards, gamma)
    assert np.allclose(high, g)  # the best rest is 0 (r_max = 0)
    assert low[0] == pytest.approx(g[0] - gamma ** 200 * 16270.0)


@pytest.mark.parametrize("terminated,tail_range", [(True, None), (False, (-10.0, 10.0))])
def test_a_return_through_a_nan_or_inf_reward_is_not_usable(terminated, tail_range):
    """A NaN reward made the whole probe's bias NaN, and a NaN bias passed the
    overestimation row; the states after the last bad reward still have a return."""
    rewards = [1.0, math.nan, 1.0, math.inf, 1.0, 1.0]
    low, high, usable = returns_with_tail(rewards, 0.5, terminated, tail_range)
    assert usable.tolist() == [False] * 4 + [True] * 2
    assert np.isfinite(low[usable]).all() and np.isfinite(high[usable]).all()


def test_without_a_range_only_states_with_a_negligible_tail_are_kept():
    gamma = 0.9
    n = tail_horizon(gamma) + 5
    _, _, usable = returns_with_tail([1.0] * n, gamma, False, None)
    assert usable.sum() == 6 and gamma ** (n - 5) <= NEGLIGIBLE_TAIL


@pytest.mark.parametrize("overrides,limit", [
    (["env.id=Pendulum-v1"], 200),                                     # the registered limit
    (["env.id=Pendulum-v1", "env.kwargs={max_episode_steps: 120}"], 120),  # the config's
])
def test_the_probe_env_runs_past_the_runs_time_limit(overrides, limit):
    """The critic bootstraps through truncation, so the rewards after the time
    limit belong to its Q: the probe's env gets the limit raised."""
    rc = load_run_config(None, overrides + ["training.gamma=0.999"])
    make, run_limit = make_env_factory(rc)
    assert run_limit == limit
    extra = tail_horizon(0.999)
    env = make(extra)
    try:
        env.reset(seed=0)
        steps, truncated = 0, False
        while not truncated:
            _, _, _, truncated, _ = env.step(np.zeros(1, np.float32))
            steps += 1
        assert steps == limit + extra
    finally:
        env.close()


def test_the_driving_probe_env_runs_past_the_runs_time_limit():
    make, limit = make_env_factory(load_run_config(None, ["env.max_episode_steps=150"]))
    env = make(300)
    try:
        assert limit == 150 and env.settings.max_episode_steps == 450
    finally:
        env.close()


def test_an_env_without_a_known_time_limit_is_made_as_configured():
    gym.register("NoLimitPendulum-v0", entry_point=lambda: gym.make("Pendulum-v1").unwrapped)
    try:
        make, limit = make_env_factory(load_run_config(None, ["env.id=NoLimitPendulum-v0"]))
        assert limit is None and make(100).spec.max_episode_steps is None
    finally:
        del gym.registry["NoLimitPendulum-v0"]
    assert math.isfinite(tail_horizon(0.99))
