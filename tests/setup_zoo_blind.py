"""The blind set-ups: written down, each with its expected verdict and why,
before any of them was run through the gate (the acceptance runs written
outside this project use set-ups the first zoo, setup_zoo.py, does not hold).

Like setup_zoo.py: nothing here switches the product. The healthy ones are
tasks unlike Pendulum and the driving task (a sparse goal behind long
episodes, rewards in the hundreds and all negative, a reward only at the
goal with a random horizon, an observation that carries nothing); the broken
ones are bugs users write or TD settings that genuinely diverge.
tests/test_setup_zoo.py runs them with the first zoo at their CI-sized
``steps``; at the gate's default steps (health.preflight_steps):

    ZOO_STEPS=default pytest tests/test_setup_zoo.py -s
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

from broken_envs import PENDULUM_REWARD_RANGE
from setup_zoo import PENDULUM, PENDULUM_RANGE, ROOT, SMALL, Setup

LARGE = 60.0  # Pendulum's reward in other units: [-976.4, 0] per step
LARGE_RANGE = (f"training.reward_range=[{LARGE * PENDULUM_REWARD_RANGE[0]}, "
               f"{LARGE * PENDULUM_REWARD_RANGE[1]}]")


class ScaledReward(gym.Wrapper):
    """Rewards in larger units, declared in those units: a correct set-up."""

    def __init__(self, env, scale: float):
        super().__init__(env)
        self.scale = scale

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, self.scale * float(reward), terminated, truncated, info


class ZeroObservation(gym.ObservationWrapper):
    """The observation carries nothing (a camera that is never plugged in)."""

    def observation(self, observation):
        return np.zeros_like(observation)


class OccasionalNaNReward(gym.Wrapper):
    """A user's env whose reward is NaN on about one step in 50 (a division by a
    distance that can be 0), inf on about one in 200."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        u = self.np_random.random()
        if u < 0.02:
            reward = float("nan")
        elif u < 0.025:
            reward = float("inf")
        return obs, reward, terminated, truncated, info


class TerminatedAtTimeLimitGrowingReward(gym.Wrapper):
    """A user's env with two common bugs together: the time limit is reported as
    ``terminated`` (not truncated), and a survival bonus grows with the step
    count (t / 10 on step t), so the per-step reward grows along the episode
    past the range its user declared (Pendulum's documented one)."""

    LIMIT = 200

    def reset(self, **kwargs):
        self._t = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._t += 1
        return (obs, float(reward) + self._t / 10.0, terminated or self._t >= self.LIMIT, False,
                info)


class RewardOnGlobalStepCounter(gym.Wrapper):
    """A user's non-stationary reward: a penalty on the env's lifetime step
    counter (never reset), so rewards drift without bound across episodes."""

    def __init__(self, env):
        super().__init__(env)
        self._steps = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._steps += 1
        return obs, float(reward) - 0.01 * self._steps, terminated, truncated, info


class AliveBonus(gym.Wrapper):
    """Rewards like a locomotion task's: +1 for every step alive, less a small
    effort cost (a hundredth of Pendulum's), so every reward lies in [0.837, 1]
    and a correct critic's values sit right under the Q bound."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, 1.0 + 0.01 * float(reward), terminated, truncated, info


class GoalOnlyCorridor(gym.Env):
    """A 1-D corridor: the point moves by ``action * 0.1`` in [-1, 1]; reaching
    x >= 1 pays 1 and ends the episode (terminated); every other step pays 0,
    and any step ends it (terminated, nothing paid) with probability ``hazard``:
    a random horizon. Per-step reward range [0, 1]."""

    def __init__(self, hazard: float = 0.02):
        self.hazard = hazard
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-1.0, 0.0))
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x = float(np.clip(self.x + 0.1 * float(np.clip(action[0], -1, 1)), -1, 1))
        if self.x >= 1.0:
            return np.array([self.x], np.float32), 1.0, True, False, {}
        ended = bool(self.np_random.random() < self.hazard)
        return np.array([self.x], np.float32), 0.0, ended, False, {}


def _pendulum(wrapper, *args):
    return lambda **kw: wrapper(gym.make("Pendulum-v1", **kw).unwrapped, *args)


def _register(env_id, entry_point, max_episode_steps=200):
    if env_id not in gym.registry:  # imported again (a worker, a reload): already there
        gym.register(env_id, entry_point=entry_point, max_episode_steps=max_episode_steps)


_register("LargeNegativePendulum-v0", _pendulum(ScaledReward, LARGE))
_register("ZeroObsPendulum-v0", _pendulum(ZeroObservation))
_register("NaNRewardPendulum-v0", _pendulum(OccasionalNaNReward))
# The env's own "time limit" is the bug: no TimeLimit wrapper truncates first.
_register("TerminatedAtLimitPendulum-v0", _pendulum(TerminatedAtTimeLimitGrowingReward),
          max_episode_steps=None)
_register("StepCounterPendulum-v0", _pendulum(RewardOnGlobalStepCounter))
_register("GoalOnlyCorridor-v0", GoalOnlyCorridor)
_register("AliveBonusPendulum-v0", _pendulum(AliveBonus))
ALIVE_RANGE = f"training.reward_range=[{1 + 0.01 * PENDULUM_REWARD_RANGE[0]}, 1.0]"

BLIND_SETUPS = [
    # -- healthy ---------------------------------------------------------------
    # Sparse +100 goal behind a -0.1 a^2 action cost, 999-step episodes that
    # rarely end early: Q stays far inside the bound 100 / (1 - 0.99).
    Setup("mountain_car_continuous", True,
          ["env.id=MountainCarContinuous-v0", "training.reward_range=[-0.1, 100.0]"] + SMALL,
          1200, "healthy"),
    # Pendulum in units 60x larger, declared in those units: the same task; every
    # check is relative to the declared range, so nothing may change.
    Setup("large_negative_rewards", True,
          ["env.id=setup_zoo_blind:LargeNegativePendulum-v0", LARGE_RANGE] + SMALL, 1200,
          "healthy"),
    # 0 on every step, 1 at the goal, a random horizon (2% hazard): returns in
    # [0, 1], terminal rows everywhere; a correct critic lives in [0, 1].
    Setup("goal_only_reward_random_horizon", True,
          ["env.id=setup_zoo_blind:GoalOnlyCorridor-v0", "training.reward_range=[0.0, 1.0]"]
          + SMALL, 1200, "healthy"),
    # Nothing to learn from, but nothing wrong with the critic or the pipeline:
    # Q(a) fits the mean return, inside the bound. The gate judges whether the
    # critic's numbers are true and the update right (GO), not whether the
    # task is learnable (the learning curve and `evaluate` say that).
    Setup("zero_observations", True,
          ["env.id=setup_zoo_blind:ZeroObsPendulum-v0", PENDULUM_RANGE] + SMALL, 1200,
          "healthy"),
    # An alive bonus: every reward within 16% of r_max, so every true value lies
    # in [0.84, 1] x the bound (the time limit truncates: the critic bootstraps
    # through it). A critic right under the bound is correct here.
    Setup("alive_bonus_rewards_near_r_max", True,
          ["env.id=setup_zoo_blind:AliveBonusPendulum-v0", ALIVE_RANGE] + SMALL, 1200,
          "healthy"),
    # The driving task among NPC traffic, from the state vector: collisions end
    # episodes early (terminal rows), the driving preset's table applies.
    Setup("highway_medium_traffic_state", True,
          ["training.image_encoder=none", "training.frame_stack=1",
           "training.learning_starts=200", "training.batch_size=64",
           "training.buffer_size=5000"] + SMALL[:2], 1200, "healthy",
          config=os.path.join(ROOT, "configs", "highway_medium.yaml")),
    # -- broken ----------------------------------------------------------------
    # Without tau = 1: Adam at critic_lr 0.05, the actor updated every step, no
    # target smoothing, a fast target (tau 0.5): the TD update is unstable and
    # |Q| must run past the bound in the run itself (the test checks it).
    Setup("unstable_td_fast_critic", False,
          PENDULUM + ["training.critic_lr=0.05", "training.actor_lr=0.01",
                      "training.policy_delay=1", "training.policy_noise=0.0",
                      "training.tau=0.5"], 1000, "overestimation", ["q_bound"]),
    # The same without a declared range (a user's gymnasium env declares none):
    # the rewards the critic trained on bound it all the same. (Added after the
    # first blind run: it found the Q checks all needed training.reward_range.)
    Setup("unstable_td_undeclared_range", False,
          [o for o in PENDULUM if o != PENDULUM_RANGE]
          + ["training.critic_lr=0.05", "training.actor_lr=0.01", "training.policy_delay=1",
             "training.policy_noise=0.0", "training.tau=0.5"], 1000, "overestimation",
          ["q_bound"]),
    # NaN on ~2% of steps, inf on ~0.5%: every iteration brings new non-finite
    # rewards (dropped before the replay, counted): diverged by the nonfinite
    # rule; a reward bug, so the reward branch.
    Setup("reward_occasionally_nan", False,
          ["env.id=setup_zoo_blind:NaNRewardPendulum-v0", PENDULUM_RANGE] + SMALL, 1000,
          "reward_scaling", ["nonfinite"]),
    # The time limit reported as terminated and a reward growing with t past the
    # declared (documented Pendulum) range: the critic's rewards are beyond it.
    Setup("terminated_at_time_limit_growing_reward", False,
          ["env.id=setup_zoo_blind:TerminatedAtLimitPendulum-v0", PENDULUM_RANGE] + SMALL, 1000,
          "reward_scaling", ["reward_range"]),
    # A penalty on the env's lifetime step counter: rewards drift past the
    # declared range on every step of later episodes, first steps included.
    Setup("reward_on_global_step_counter", False,
          ["env.id=setup_zoo_blind:StepCounterPendulum-v0", PENDULUM_RANGE] + SMALL, 1000,
          "reward_scaling", ["reward_range"]),
]
