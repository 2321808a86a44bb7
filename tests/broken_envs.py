"""Broken set-ups a user could write, owned by the tests (never by the product):
gymnasium envs registered under module-qualified ids, e.g.
``env.id: "broken_envs:RunningSumPendulum-v0"`` (gymnasium imports this module,
which must be importable: the tests directory is on sys.path under pytest).
"""

import gymnasium as gym
import numpy as np

# Pendulum's per-step reward: -(theta^2 + 0.1 thetadot^2 + 0.001 u^2), theta in
# [-pi, pi], |thetadot| <= 8, |u| <= 2.
PENDULUM_REWARD_RANGE = (-16.2736044, 0.0)


class RunningSumRewards(gym.Wrapper):
    """A user's bug: each step returns the episode's reward so far (a running
    sum) instead of the step's own. With Pendulum's all-negative rewards the
    critic's targets head to minus infinity."""

    def reset(self, **kwargs):
        self._sum = 0.0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._sum += float(reward)
        return obs, self._sum, terminated, truncated, info


def _running_sum_pendulum(**kwargs):
    return RunningSumRewards(gym.make("Pendulum-v1", **kwargs))


def _register(env_id, entry_point):
    if env_id not in gym.registry:  # imported again (a worker, a reload): already there
        gym.register(env_id, entry_point=entry_point)


_register("RunningSumPendulum-v0", _running_sum_pendulum)


class RewardGlitch(gym.Wrapper):
    """A sensor glitch: one step of the whole run returns a finite but absurd
    reward (1e30). The Bellman error on any batch holding it overflows float32,
    so the learner skips those steps (counted as non-finite losses)."""

    GLITCH_AT = 300

    def __init__(self, env):
        super().__init__(env)
        self._steps = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._steps += 1
        return obs, 1e30 if self._steps == self.GLITCH_AT else reward, terminated, truncated, info


def _glitchy_pendulum(**kwargs):
    return RewardGlitch(gym.make("Pendulum-v1", **kwargs))


_register("GlitchyPendulum-v0", _glitchy_pendulum)


class NaNObservation(gym.Wrapper):
    """A sensor that drops out: about one observation in 40 has a NaN in it.
    The rewards stay finite (the env computes them from its own state, and
    takes a NaN action, what a policy makes of a NaN observation, as 0)."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(np.nan_to_num(action))
        if self.np_random.random() < 1 / 40:
            obs = obs.copy()
            obs[0] = np.nan
        return obs, reward, terminated, truncated, info


def _nan_obs_pendulum(**kwargs):
    return NaNObservation(gym.make("Pendulum-v1", **kwargs))


_register("NaNObsPendulum-v0", _nan_obs_pendulum)
