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

from typing import Dict, List, Literal, Optional

from pydantic import Field, StrictFloat, StrictInt, StrictStr, model_validator
from pydantic.dataclasses import dataclass

from rllib_av.config_schema import ConfigError, ConfigSection

# Rows of the preflight GO / NO-GO table (rllib_av/health/preflight.py).
PREFLIGHT_CHECKS = ("actor_loss", "episode_length", "q_bound", "grad_norm", "reward_range",
                    "terminal_masking", "nonfinite", "overestimation")

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
class HealthSettings(ConfigSection):
    preset: Literal[tuple(PRESETS)] = "none"
    """Fills the thresholds below that are left unset (the driving preset: the driving
    incident's GO / NO-GO table)."""

    q_bound_warn_ratio: StrictFloat = Field(0.9, gt=0)
    """q_bound_ratio (max |Q| seen / q_bound) above this: warning."""
    q_bound_diverge_ratio: StrictFloat = Field(1.0, gt=0)
    """q_bound_ratio above this: diverged (1.0 = the physical limit itself)."""
    q_interval_slack: StrictFloat = Field(0.25, ge=0)
    """Q beyond a short end of the return interval [r_min, r_max] / (1 - gamma), one
    |Q| <= q_bound cannot see (Pendulum's rewards in [-16.3, 0]: nothing true is above 0),
    by more than this fraction of the spread of the critic's own Q statistics that
    iteration (max - min; at least one step's reward span r_max - r_min): diverged. The
    interval is widened to hold 0, where an untrained critic starts. A critic whose true
    values sit on that end (Pendulum upright) strays past it by its fitting error, which
    grows with the spread of the values it fits: healthy Pendulum TD3 runs went up to 4% of
    that spread above 0 (12 over 273). A critic a quarter of its own span past a physical
    limit is not fitting noise; one whose values all drift past the end (a spread that
    stays small) is caught at one step's span."""
    actor_loss_abs_max: Optional[StrictFloat] = Field(None, gt=0)
    """|actor_loss| is -mean Q1(s, mu(s)): always judged against the Q bound; this absolute
    ceiling (a warning) is for a reward scale you know."""
    grad_norm_warn: Optional[StrictFloat] = Field(None, gt=0)
    """Pre-clip global gradient norm of either optimizer above this: warning (no
    env-independent scale)."""
    grad_norm_diverge: Optional[StrictFloat] = Field(None, gt=0)
    """Pre-clip global gradient norm of either optimizer above this: diverged."""
    nonfinite_diverge_iters: StrictInt = Field(3, ge=1)
    """NaN/inf from the env or the learner (counted, kept out of buffer and weights): a
    warning in an iteration that brought new ones; diverged once this many consecutive
    iterations have."""

    # -- divergence guard (rllib_av/health/guard.py) --
    guard_action: Literal["off", "alert", "stop", "rollback"] = "alert"
    """What the guard does once divergence_state has been diverged for guard_patience
    consecutive iterations: alert only logs and counts, stop ends the run with a report,
    rollback restores the newest healthy checkpoint and applies the remedy (then stops
    once rollbacks run out)."""
    guard_patience: StrictInt = Field(3, ge=1)
    guard_max_rollbacks: StrictInt = Field(3, ge=0)
    guard_critic_lr_factor: StrictFloat = Field(0.5, gt=0, le=1)
    """Remedy after each rollback: critic learning rate multiplied by this."""
    guard_policy_noise_factor: StrictFloat = Field(1.5, ge=1)
    """Remedy after each rollback: target policy smoothing noise multiplied by this
    (stronger smoothing)."""

    # -- critic probes (rllib_av/critic_probes.py) --
    probe_every_iters: StrictInt = Field(50, ge=0)
    """Critic probes run at the end of every run and every this many iterations (0 = only
    at the end)."""
    probe_episodes: StrictInt = Field(3, ge=0)
    """Evaluation rollouts of the overestimation probe (0 = none). Never run on the CARLA
    backend: they would need a simulator of their own."""

    # -- preflight GO / NO-GO gate (rllib_av/health/preflight.py) --
    preflight_steps: StrictInt = Field(5000, ge=1)
    preflight_probes: StrictInt = Field(4, ge=1)
    """Probes spread evenly over the preflight run (the last at its end): the
    overestimation trend needs three."""
    preflight_actor_loss_abs_max: Optional[StrictFloat] = Field(None, gt=0)
    """Unset: |actor loss| against the Q bound only."""
    preflight_episode_len_min: Optional[StrictFloat] = Field(None, ge=0)
    """Final mean episode length in [min, max] steps, or growing over the run. Unset: the
    episode length must not collapse (see preflight.py)."""
    preflight_episode_len_max: Optional[StrictFloat] = Field(None, gt=0)
    """See preflight_episode_len_min."""
    preflight_q_bound_ratio_max: StrictFloat = Field(1.0, gt=0)
    """max |Q| / q_bound over the run (the incident's 'Q1 < 200 for that reward scale',
    generalized)."""
    preflight_grad_norm_max: Optional[StrictFloat] = Field(None, gt=0)
    """Unset: the row reports the norm, judges nothing."""
    preflight_overestimation_max: StrictFloat = Field(2.0, gt=0)
    """Overestimation: the bias Q(s, mu(s)) - return grows over the last three probes and
    ends above this many times the run's own return scale. A critic still near its
    initial 0 is off by 1x (|0 - G| = |G|): beyond 2x is more than initialization
    explains."""
    preflight_required: List[StrictStr] = Field(
        default_factory=lambda: ["actor_loss", "episode_length", "q_bound", "reward_range",
                                 "terminal_masking", "nonfinite"])
    """Rows that must pass for GO; the others are reported only."""

    def __post_init__(self) -> None:
        for key, value in PRESETS.get(self.preset, {}).items():
            if getattr(self, key) is None:
                setattr(self, key, value)

    def source(self, key: str) -> str:
        """Why ``key`` has its value: the preset's table or the config."""
        if PRESETS.get(self.preset, {}).get(key) == getattr(self, key):
            return f"the {self.preset} preset (the driving incident's GO/NO-GO table)"
        return f"set in the config (health.{key})"

    @model_validator(mode="after")
    def check(self) -> "HealthSettings":
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
        return self
