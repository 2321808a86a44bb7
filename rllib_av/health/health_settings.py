"""The `health:` section of a run config: divergence rules and gate thresholds.

The defaults hold for any env, because each derives from the env itself: the
Q bound (a critic past max(|r_min|, |r_max|) / (1 - gamma) is wrong), the
actor loss against that bound (it is -mean Q), episode lengths against the
run's own earlier lengths, the overestimation bias against the run's own
returns and its trend. A threshold that has no env-independent scale (a
gradient norm, an absolute |actor loss|, an episode length in steps) is unset
(None: the rule is not applied) unless a preset or the config sets it.

``preset: driving`` fills those with the driving incident's GO / NO-GO table
(``DRIVING_PRESET``); the driving configs under configs/ use it. A value the
config sets explicitly wins over the preset.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from rllib_av.config_schema import ConfigError, bounds, choices

# Rows of the preflight GO / NO-GO table (rllib_av/health/preflight.py).
PREFLIGHT_CHECKS = ("actor_loss", "episode_length", "q_bound", "grad_norm", "reward_range",
                    "terminal_masking", "overestimation")

# The incident's table (|actor loss| < 1e5, final episode length in [5, 20]
# steps, grad norm < 1e4; its "Q1 < 200 for that reward scale" is the Q bound,
# which every env gets): numbers for the driving task's reward scale and
# episode structure, not a rule for every env.
DRIVING_PRESET: Dict[str, float] = {
    "actor_loss_abs_max": 1e5,
    "grad_norm_warn": 1e4,
    "grad_norm_diverge": 1e6,
    "preflight_actor_loss_abs_max": 1e5,
    "preflight_episode_len_min": 5.0,
    "preflight_episode_len_max": 20.0,
    "preflight_grad_norm_max": 1e4,
}
PRESETS: Dict[str, Dict[str, float]] = {"none": {}, "driving": DRIVING_PRESET}


@dataclass
class HealthSettings:
    # Fills the thresholds below that are left unset (see DRIVING_PRESET).
    preset: str = field(default="none", metadata=choices(*PRESETS))

    # q_bound_ratio = max |Q| seen / q_bound. Above warn: warning; above
    # diverge: diverged (1.0 = the physical limit itself).
    q_bound_warn_ratio: float = field(default=0.9, metadata=bounds(gt=0))
    q_bound_diverge_ratio: float = field(default=1.0, metadata=bounds(gt=0))
    # |actor_loss| is -mean Q1(s, mu(s)): always judged against the bound; this
    # absolute ceiling (a warning) is for a reward scale you know.
    actor_loss_abs_max: Optional[float] = field(default=None, metadata=bounds(gt=0))
    # Pre-clip global gradient norm of either optimizer (no env-independent scale).
    grad_norm_warn: Optional[float] = field(default=None, metadata=bounds(gt=0))
    grad_norm_diverge: Optional[float] = field(default=None, metadata=bounds(gt=0))
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

    # -- critic probes (rllib_av/critic_probes.py) --
    # Run at the end of every run and every this many iterations (0 = only at the end).
    probe_every_iters: int = field(default=50, metadata=bounds(ge=0))
    # Evaluation rollouts of the overestimation probe (0 = none). Never run on the
    # CARLA backend: they would need a simulator of their own.
    probe_episodes: int = field(default=3, metadata=bounds(ge=0))

    # -- preflight GO / NO-GO gate (rllib_av/health/preflight.py) --
    preflight_steps: int = field(default=5000, metadata=bounds(ge=1))
    # Probes spread evenly over the preflight run (the last at its end): the
    # overestimation trend needs three.
    preflight_probes: int = field(default=4, metadata=bounds(ge=1))
    # Unset: |actor loss| against the Q bound only.
    preflight_actor_loss_abs_max: Optional[float] = field(default=None, metadata=bounds(gt=0))
    # Final mean episode length in [min, max] steps, or growing over the run.
    # Unset: the episode length must not collapse (see preflight.py).
    preflight_episode_len_min: Optional[float] = field(default=None, metadata=bounds(ge=0))
    preflight_episode_len_max: Optional[float] = field(default=None, metadata=bounds(gt=0))
    # max |Q| / q_bound over the run ("Q1 < 200 for that reward scale", generalized).
    preflight_q_bound_ratio_max: float = field(default=1.0, metadata=bounds(gt=0))
    # Unset: the row reports the norm, judges nothing.
    preflight_grad_norm_max: Optional[float] = field(default=None, metadata=bounds(gt=0))
    # Overestimation: the bias Q(s, mu(s)) - return grows over the last three
    # probes and ends above this many times the run's own return scale. A
    # critic still near its initial 0 is off by 1x (|0 - G| = |G|): beyond 2x
    # is more than initialization explains.
    preflight_overestimation_max: float = field(default=2.0, metadata=bounds(gt=0))
    # Rows that must pass for GO; the others are reported only.
    preflight_required: List[str] = field(
        default_factory=lambda: ["actor_loss", "episode_length", "q_bound", "reward_range",
                                 "terminal_masking"])

    def __post_init__(self) -> None:
        for key, value in PRESETS.get(self.preset, {}).items():
            if getattr(self, key) is None:
                setattr(self, key, value)

    def source(self, key: str) -> str:
        """Why ``key`` has its value: the preset's table or the config."""
        if PRESETS.get(self.preset, {}).get(key) == getattr(self, key):
            return f"the {self.preset} preset (the driving incident's GO/NO-GO table)"
        return f"set in the config (health.{key})"

    def check(self) -> None:
        unknown = [c for c in self.preflight_required if c not in PREFLIGHT_CHECKS]
        if unknown:
            raise ConfigError(f"health.preflight_required: {unknown[0]!r} is not allowed; "
                              "expected names from " + ", ".join(PREFLIGHT_CHECKS))
        for low, high in (("preflight_episode_len_min", "preflight_episode_len_max"),
                          ("q_bound_warn_ratio", "q_bound_diverge_ratio"),
                          ("grad_norm_warn", "grad_norm_diverge")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ConfigError(f"health.{low}: {lo} is not allowed; "
                                  f"expected <= health.{high} ({hi})")
