"""The `health:` section of a run config: divergence rules and gate thresholds.

Defaults come from the incident's GO / NO-GO table (|actor loss| < 1e5, grad
norm < 1e4) and from the Q bound: a critic past the bound is wrong.
"""

from dataclasses import dataclass, field
from typing import List

from rllib_av.config_schema import ConfigError, bounds, choices

# Rows of the preflight GO / NO-GO table (rllib_av/health/preflight.py).
PREFLIGHT_CHECKS = ("actor_loss", "episode_length", "q_bound", "grad_norm", "reward_range",
                    "terminal_masking", "overestimation")


@dataclass
class HealthSettings:
    # q_bound_ratio = max |Q| seen / q_bound. Above warn: warning; above
    # diverge: diverged (1.0 = the physical limit itself).
    q_bound_warn_ratio: float = field(default=0.9, metadata=bounds(gt=0))
    q_bound_diverge_ratio: float = field(default=1.0, metadata=bounds(gt=0))
    # |actor_loss| is -mean Q1(s, mu(s)): also judged against the bound, plus an
    # absolute ceiling for runs whose q_bound is unknown.
    actor_loss_abs_max: float = field(default=1e5, metadata=bounds(gt=0))
    # Pre-clip global gradient norm of either optimizer.
    grad_norm_warn: float = field(default=1e4, metadata=bounds(gt=0))
    grad_norm_diverge: float = field(default=1e6, metadata=bounds(gt=0))
    # NaN/inf from the env or the learner (counted, kept out of buffer and
    # weights): a warning in an iteration that brought new ones; diverged once
    # this many consecutive iterations have.
    nonfinite_diverge_iters: int = field(default=3, metadata=bounds(ge=1))

    # -- divergence guard (rllib_av/health/guard.py) --
    # What the guard does once divergence_state has been "diverged" for
    # guard_patience consecutive iterations: "alert" only logs and counts,
    # "stop" ends the run with a report, "rollback" restores the newest healthy
    # checkpoint and applies the remedy (then stops once rollbacks run out).
    guard_action: str = field(default="alert", metadata=choices("off", "alert", "stop", "rollback"))
    guard_patience: int = field(default=3, metadata=bounds(ge=1))
    guard_max_rollbacks: int = field(default=3, metadata=bounds(ge=0))
    # Remedy after each rollback: critic learning rate multiplied by this.
    guard_critic_lr_factor: float = field(default=0.5, metadata=bounds(gt=0, le=1))
    # ... and the target policy smoothing noise by this (stronger smoothing).
    guard_policy_noise_factor: float = field(default=1.5, metadata=bounds(ge=1))

    # -- critic probes (rllib_av/health/overestimation.py, replay_checks.py) --
    # Run at the end of every run and every this many iterations (0 = only at the end).
    probe_every_iters: int = field(default=50, metadata=bounds(ge=0))
    # Evaluation rollouts of the overestimation probe (0 = none). Never run on the
    # CARLA backend: they would need a simulator of their own.
    probe_episodes: int = field(default=3, metadata=bounds(ge=0))

    # -- preflight GO / NO-GO gate (rllib_av/health/preflight.py) --
    preflight_steps: int = field(default=5000, metadata=bounds(ge=1))
    preflight_actor_loss_abs_max: float = field(default=1e5, metadata=bounds(gt=0))
    # Final mean episode length in [min, max] steps, or growing over the run.
    preflight_episode_len_min: float = field(default=5.0, metadata=bounds(ge=0))
    preflight_episode_len_max: float = field(default=20.0, metadata=bounds(gt=0))
    # max |Q| / q_bound over the run ("Q1 < 200 for that reward scale", generalized).
    preflight_q_bound_ratio_max: float = field(default=1.0, metadata=bounds(gt=0))
    preflight_grad_norm_max: float = field(default=1e4, metadata=bounds(gt=0))
    # Overestimation bias (Q(s, mu(s)) - discounted MC return) as a fraction of q_bound.
    preflight_overestimation_max: float = field(default=0.25, metadata=bounds(gt=0))
    # Rows that must pass for GO; the others are reported only.
    preflight_required: List[str] = field(
        default_factory=lambda: ["actor_loss", "episode_length", "q_bound", "reward_range",
                                 "terminal_masking"])

    def check(self) -> None:
        unknown = [c for c in self.preflight_required if c not in PREFLIGHT_CHECKS]
        if unknown:
            raise ConfigError(f"health.preflight_required: {unknown[0]!r} is not allowed; "
                              "expected names from " + ", ".join(PREFLIGHT_CHECKS))
        if self.preflight_episode_len_min > self.preflight_episode_len_max:
            raise ConfigError(
                f"health.preflight_episode_len_min: {self.preflight_episode_len_min} is not "
                f"allowed; expected <= health.preflight_episode_len_max "
                f"({self.preflight_episode_len_max})")
        if self.q_bound_warn_ratio > self.q_bound_diverge_ratio:
            raise ConfigError(
                f"health.q_bound_warn_ratio: {self.q_bound_warn_ratio} is not allowed; "
                f"expected <= health.q_bound_diverge_ratio ({self.q_bound_diverge_ratio})"
            )
        if self.grad_norm_warn > self.grad_norm_diverge:
            raise ConfigError(
                f"health.grad_norm_warn: {self.grad_norm_warn} is not allowed; "
                f"expected <= health.grad_norm_diverge ({self.grad_norm_diverge})"
            )
