"""The set-up zoo: healthy and genuinely broken training set-ups, each with the
verdict, preflight result and diagnose branch it must get.

Nothing here switches the product: the broken ones are what users write (an
env whose reward is a running sum, an env in other units than the range its
user declared, an unstable TD configuration, a learner subclass that forgets
the terminal mask) and the healthy ones are envs unlike the driving task
(stochastic terminations nobody can predict, a long horizon, a custom env with
a goal). Envs are gymnasium ids under this module (``setup_zoo:...``), the
learner a ``training.learner_class``; gymnasium and the config import them
(the tests directory is on sys.path under pytest).

Each set-up trains as few env steps as its signal needs (``steps``), with
small critics and actors: the zoo is a CI test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List

import gymnasium as gym
import torch
from ray.rllib.core.columns import Columns

from rllib_av.algorithms.td3.td3_learner import TD3TorchLearner

from broken_envs import PENDULUM_REWARD_RANGE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PENDULUM_RANGE = f"training.reward_range=[{PENDULUM_REWARD_RANGE[0]}, {PENDULUM_REWARD_RANGE[1]}]"


class RandomHazard(gym.Wrapper):
    """Each step ends the episode (terminated) with probability ``p``, whatever
    the agent does: terminations that no critic can predict from (s, a), like
    a collision caused by traffic. A correct critic does not fit Q(s, a) ~ r
    on them; its Bellman targets there are still r exactly."""

    def __init__(self, env, p: float = 0.03):
        super().__init__(env)
        self.p = p

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated or bool(self.np_random.random() < self.p), truncated, info


class RewardInOtherUnits(gym.Wrapper):
    """A user's bug: the reward comes out 1000x what its user declared (a units
    mistake: the range was written for the env's documented reward)."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, 1000.0 * float(reward), terminated, truncated, info


class AliveWithCrashes(gym.Wrapper):
    """A lopsided reward (a driving or locomotion task's shape): +1 per step
    alive less a small effort cost (a hundredth of Pendulum's), and a crash
    (terminated, -100) with probability ``p`` per step, whatever the agent does.
    Declared range [-100, 1]: q_bound 1e4 at gamma 0.99, but no true return is
    above 100."""

    CRASH = -100.0

    def __init__(self, env, p: float = 0.002):
        super().__init__(env)
        self.p = p

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.np_random.random() < self.p:
            return obs, self.CRASH, True, truncated, info
        return obs, 1.0 + 0.01 * float(reward), terminated, truncated, info


class BootstrapThroughTerminals(TD3TorchLearner):
    """A user's learner that forgot the (1 - terminated) mask: it bootstraps
    through every episode end."""

    def _critic_loss(self, module_id, config, batch, fwd_out):
        batch = {**batch, Columns.TERMINATEDS: torch.zeros_like(batch[Columns.TERMINATEDS])}
        return super()._critic_loss(module_id, config, batch, fwd_out)


def _register(env_id, entry_point):
    if env_id not in gym.registry:  # imported again (a worker, a reload): already there
        gym.register(env_id, entry_point=entry_point, max_episode_steps=200)


_register("HazardPendulum-v0", lambda **kw: RandomHazard(gym.make("Pendulum-v1", **kw).unwrapped))
_register("OtherUnitsPendulum-v0",
          lambda **kw: RewardInOtherUnits(gym.make("Pendulum-v1", **kw).unwrapped))
_register("CrashPendulum-v0", lambda **kw: AliveWithCrashes(gym.make("Pendulum-v1", **kw).unwrapped))
CRASH_RANGE = f"training.reward_range=[{AliveWithCrashes.CRASH}, 1.0]"


@dataclass
class Setup:
    name: str
    healthy: bool
    overrides: List[str]
    steps: int
    branch: str  # what diagnose must answer
    catches: List[str] = field(default_factory=list)  # preflight rows that must fail
    config: str = None  # a config under configs/, else the defaults plus overrides

    @property
    def verdict(self) -> str:
        return "healthy" if self.healthy else "not healthy"

    @property
    def gate(self) -> str:
        return "GO" if self.healthy else "NO-GO"


SMALL = ["training.actor_hiddens=[64, 64]", "training.critic_hiddens=[64, 64]",
         "training.learning_starts=200", "training.batch_size=64", "training.buffer_size=10000"]
PENDULUM = ["env.id=Pendulum-v1", PENDULUM_RANGE] + SMALL
SMALL_PENDULUM = ["env.id=Pendulum-v1"] + SMALL  # no declared range

SETUPS = [
    # -- healthy ---------------------------------------------------------------
    Setup("pendulum", True, PENDULUM, 1200, "healthy"),
    Setup("quickstart", True, ["training.learning_starts=200", "training.batch_size=64",
                               "training.buffer_size=5000"], 1200, "healthy",
          config=os.path.join(ROOT, "configs", "quickstart.yaml")),
    Setup("stochastic_terminations", True,
          ["env.id=setup_zoo:HazardPendulum-v0", PENDULUM_RANGE] + SMALL, 1200, "healthy"),
    Setup("long_horizon_gamma_0.999", True, PENDULUM + ["training.gamma=0.999"], 1200, "healthy"),
    Setup("custom_env_point_goal", True, SMALL[:2] + ["training.learning_starts=300",
                                                     "training.batch_size=64"], 1500, "healthy",
          config=os.path.join(ROOT, "configs", "custom_env.yaml")),
    # A lopsided range, [-100, 1]: every true value is <= 100, far inside q_bound 1e4.
    Setup("lopsided_alive_with_crashes", True,
          ["env.id=setup_zoo:CrashPendulum-v0", CRASH_RANGE] + SMALL, 1200, "healthy"),
    # Without a declared range (a user's gymnasium env declares none) both stay
    # healthy: the interval judged is the one of every reward stored.
    Setup("pendulum_undeclared", True, SMALL_PENDULUM, 1200, "healthy"),
    Setup("lopsided_alive_with_crashes_undeclared", True,
          ["env.id=setup_zoo:CrashPendulum-v0"] + SMALL, 1200, "healthy"),
    # -- broken ----------------------------------------------------------------
    Setup("reward_running_sum", False,
          ["env.id=broken_envs:RunningSumPendulum-v0", PENDULUM_RANGE] + SMALL, 1000,
          "reward_scaling", ["reward_range"]),
    Setup("reward_beyond_declared_range", False,
          ["env.id=setup_zoo:OtherUnitsPendulum-v0", PENDULUM_RANGE] + SMALL, 1000,
          "reward_scaling", ["reward_range", "q_bound"]),
    Setup("unstable_td_tau_1", False, PENDULUM + ["training.tau=1.0", "training.critic_lr=0.01"],
          1000, "overestimation", ["q_bound"]),
    # The same lopsided task with tau 1 and critic_lr 0.01: Q runs up to ~5x the
    # highest true return 100 while |Q| stays under 5% of q_bound 1e4.
    Setup("lopsided_unstable_td_upward", False,
          ["env.id=setup_zoo:CrashPendulum-v0", CRASH_RANGE, "training.tau=1.0",
           "training.critic_lr=0.01"] + SMALL, 1000, "overestimation", ["q_bound"]),
    # The same undeclared: the crashes and the alive bonus in replay give the
    # interval [-100, 1] / (1 - gamma) all the same, and Q past 100 leaves it.
    Setup("lopsided_unstable_td_upward_undeclared", False,
          ["env.id=setup_zoo:CrashPendulum-v0", "training.tau=1.0", "training.critic_lr=0.01"]
          + SMALL, 1000, "overestimation", ["q_bound"]),
    Setup("bootstrap_through_terminals", False,
          ["env.id=setup_zoo:HazardPendulum-v0", PENDULUM_RANGE, "training.learner_class="
           "setup_zoo:BootstrapThroughTerminals"] + SMALL, 1000, "bootstrap",
          ["terminal_masking"]),
]


@dataclass
class Outcome:
    setup: Setup
    go: bool
    worst_state: int  # the worst divergence_state the run reached
    branch: str
    failed_rows: List[str]

    @property
    def right(self) -> bool:
        return (self.go is self.setup.healthy and (self.worst_state == 0) is self.setup.healthy
                and self.branch == self.setup.branch)


RESULTS: List[Outcome] = []  # filled by test_setup_zoo.py, printed by conftest.py


def confusion_table(results: List[Outcome]) -> str:
    """Per set-up what was expected and what came out, then the gate's
    confusion matrix (truly healthy or broken vs GO / NO-GO)."""
    state = {0: "healthy", 1: "warning", 2: "diverged"}
    rows = [("set-up", "truth", "verdict", "gate", "failed rows", "branch (expected)", "right")]
    for r in results:
        rows.append((r.setup.name, "healthy" if r.setup.healthy else "broken",
                     state[r.worst_state], "GO" if r.go else "NO-GO",
                     ",".join(r.failed_rows) or "-", f"{r.branch} ({r.setup.branch})",
                     "yes" if r.right else "NO"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    count = {(h, g): sum(1 for r in results if r.setup.healthy is h and r.go is g)
             for h in (True, False) for g in (True, False)}
    lines += ["", "gate        GO  NO-GO",
              f"healthy   {count[True, True]:4d}  {count[True, False]:5d}",
              f"broken    {count[False, True]:4d}  {count[False, False]:5d}",
              f"{sum(r.right for r in results)} of {len(results)} set-ups right "
              "(verdict, gate and branch)"]
    return "\n".join(lines)
