"""The divergence guard's decisions on sustained ``divergence_state = diverged``.

After ``health.guard_patience`` consecutive diverged iterations it decides what
``health.guard_action`` says:
  alert    log, count, carry on (again after another patience window);
  stop     end the run with a report;
  rollback restore the newest checkpoint tagged healthy, lower the critic
           learning rate by ``guard_critic_lr_factor`` and raise the target
           smoothing noise by ``guard_policy_noise_factor`` per rollback so far; once
           ``guard_max_rollbacks`` are spent (or no healthy checkpoint exists), stop.
It only decides: the training loop carries the decision out (rllib_av/guard_actions.py),
records it in ``guard.jsonl`` and counts it in ``rllib_av_guard_actions_total{action}``.
What the rollbacks changed (``GuardState``) is saved with every checkpoint, so
a resumed run keeps the remedy instead of returning to the settings that diverged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from rllib_av.health.health_settings import HealthSettings

GUARD_FILE = "guard.jsonl"
REPORT_FILE = "guard_report.txt"


@dataclass
class GuardState:
    rollbacks: int = 0
    # The remedy in effect after the last rollback (None: the run config's).
    critic_lr: Optional[float] = None
    policy_noise: Optional[float] = None


@dataclass
class GuardDecision:
    action: str  # alert | stop | rollback
    reasons: List[str] = field(default_factory=list)
    checkpoint: Optional[str] = None  # rollback: the healthy checkpoint to restore
    critic_lr: Optional[float] = None  # rollback: the remedy from now on
    policy_noise: Optional[float] = None
    why: Optional[str] = None  # a stop that should have been a rollback: why not

    def detail(self) -> Dict:
        """The decision's specifics, for guard.jsonl."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("action", "reasons") and v is not None}


class DivergenceGuard:
    def __init__(self, settings: HealthSettings, critic_lr: float, policy_noise: float,
                 state: Optional[GuardState] = None):
        self.settings = settings
        self.critic_lr = critic_lr
        self.policy_noise = policy_noise
        self.state = state or GuardState()
        self.streak = 0

    def after_iteration(self, health: Dict,
                        healthy_checkpoint: Optional[str]) -> Optional[GuardDecision]:
        """Judge one iteration's ``result["health"]``; returns what to do, or None.

        ``healthy_checkpoint``: the newest checkpoint tagged healthy, if any."""
        s = self.settings
        states = health.get("divergence_state") or {}
        self.streak = self.streak + 1 if states and max(states.values()) >= 2 else 0
        if s.guard_action == "off" or self.streak < s.guard_patience:
            return None
        self.streak = 0
        decision = GuardDecision(s.guard_action,
                                 [r for rs in (health.get("reasons") or {}).values() for r in rs])
        if decision.action == "rollback":
            if healthy_checkpoint is None or self.state.rollbacks >= s.guard_max_rollbacks:
                decision.action = "stop"
                decision.why = ("no healthy checkpoint" if healthy_checkpoint is None
                                else f"{self.state.rollbacks} rollbacks spent")
            else:
                n = self.state.rollbacks + 1
                self.state = GuardState(
                    rollbacks=n, critic_lr=self.critic_lr * s.guard_critic_lr_factor ** n,
                    policy_noise=self.policy_noise * s.guard_policy_noise_factor ** n)
                decision.checkpoint = healthy_checkpoint
                decision.critic_lr = self.state.critic_lr
                decision.policy_noise = self.state.policy_noise
        return decision

    def stop_report(self, decision: GuardDecision, iteration: int, run_dir: str,
                    last_healthy: Optional[str]) -> str:
        return "\n".join([
            f"divergence guard stopped the run at iteration {iteration} after "
            f"{self.settings.guard_patience} diverged iterations"
            + (f" ({decision.why})" if decision.why else ""),
            *[f"  {r}" for r in decision.reasons],
            f"  rollbacks: {self.state.rollbacks}",
            f"  last healthy checkpoint: {last_healthy}",
            f"  next: rllib-av diagnose {run_dir}"])
