"""The `health:` section of a run config: divergence rules and gate thresholds.

Defaults come from the incident's GO / NO-GO table (|actor loss| < 1e5, grad
norm < 1e4) and from the Q bound: a critic past the bound is wrong.
"""

from dataclasses import dataclass, field

from rllib_av.config_schema import ConfigError, bounds


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

    def check(self) -> None:
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
