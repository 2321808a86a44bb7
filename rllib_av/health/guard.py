"""The divergence guard: acts on sustained ``divergence_state = diverged``.

After ``health.guard_patience`` consecutive diverged iterations it does what
``health.guard_action`` says:
  alert    log, count, carry on (again after another patience window);
  stop     end the run with a report;
  rollback restore the newest checkpoint tagged healthy, lower the critic
           learning rate by ``guard_critic_lr_factor`` and raise the target
           smoothing noise by ``guard_policy_noise_factor`` per rollback so far; once
           ``guard_max_rollbacks`` are spent (or no healthy checkpoint exists), stop.
Every action is logged, appended to ``guard.jsonl`` in the run directory (a
stop also writes ``guard_report.txt``) and counted in ``rllib_av_guard_actions_total{action}``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Dict, List, Optional

from rllib_av.checkpoints import latest_checkpoint, read_meta
from rllib_av.health.health_settings import HealthSettings

logger = logging.getLogger(__name__)

GUARD_FILE = "guard.jsonl"
REPORT_FILE = "guard_report.txt"


def apply_remedy(learner, critic_lr: float, policy_noise: float) -> None:
    set_critic_lr(learner, critic_lr)
    learner.policy_noise_override = policy_noise


def set_critic_lr(learner, lr: float) -> float:
    """Set every module's critic optimizer to ``lr`` (also RLlib's fixed-value
    scheduler, which would otherwise put the old rate back after each update)."""
    for module_id in learner.module.keys():
        optim = learner.get_optimizer(module_id, "critic")
        schedule = learner._optimizer_lr_schedules.get(optim)
        if schedule is not None and not schedule.use_schedule:
            schedule._curr_value = lr
        learner._set_optimizer_lr(optim, lr)
    return lr


class DivergenceGuard:
    def __init__(self, settings: HealthSettings, run_dir: str, critic_lr: float,
                 policy_noise: float):
        self.settings = settings
        self.run_dir = run_dir
        self.critic_lr = critic_lr
        self.policy_noise = policy_noise
        self.streak = 0
        self.rollbacks = 0
        self.report: Optional[str] = None

    def after_iteration(self, algo, result: Dict) -> Optional[str]:
        """Judge one result; returns the action taken ("alert", "stop", "rollback") or None."""
        s = self.settings
        health = result.get("health") or {}
        states = health.get("divergence_state") or {}
        self.streak = self.streak + 1 if states and max(states.values()) >= 2 else 0
        if s.guard_action == "off" or self.streak < s.guard_patience:
            return None
        reasons = [r for rs in (health.get("reasons") or {}).values() for r in rs]
        action, detail = s.guard_action, {}
        if action == "rollback":
            checkpoint = latest_checkpoint(self.run_dir, healthy_only=True)
            if self.rollbacks >= s.guard_max_rollbacks or checkpoint is None:
                action = "stop"
                detail["why"] = ("no healthy checkpoint" if checkpoint is None
                                 else f"{self.rollbacks} rollbacks spent")
            else:
                self.rollbacks += 1
                algo.restore_from_path(checkpoint)
                detail["checkpoint_env_steps"] = read_meta(checkpoint)["env_steps"]
                lr = self.critic_lr * s.guard_critic_lr_factor ** self.rollbacks
                noise = self.policy_noise * s.guard_policy_noise_factor ** self.rollbacks
                algo.learner_group.foreach_learner(lambda learner: apply_remedy(learner, lr, noise))
                detail.update(checkpoint=checkpoint, critic_lr=lr, policy_noise=noise)
        self.streak = 0
        self._record(algo, result, action, reasons, detail)
        if action == "stop":
            self.report = self._stop_report(result, reasons, detail)
            with open(os.path.join(self.run_dir, REPORT_FILE), "w") as f:
                f.write(self.report + "\n")
        return action

    def _record(self, algo, result, action: str, reasons: List[str], detail: Dict) -> None:
        from rllib_av.monitoring.callbacks import health_callbacks

        entry = {"time_s": time.time(), "training_iteration": result.get("training_iteration"),
                 "env_steps": result.get("env_runners", {}).get("num_env_steps_sampled_lifetime"),
                 "action": action, "reasons": reasons, **detail}
        logger.warning("divergence guard: %s at iteration %s (%s) %s", action,
                       entry["training_iteration"], "; ".join(reasons), detail)
        with open(os.path.join(self.run_dir, GUARD_FILE), "a") as f:
            f.write(json.dumps(entry) + "\n")
        callbacks = health_callbacks(algo)
        if callbacks is not None and callbacks.exporter is not None:
            callbacks.exporter.count_guard_action(action)

    def _stop_report(self, result, reasons: List[str], detail: Dict) -> str:
        lines = [f"divergence guard stopped the run at iteration "
                 f"{result.get('training_iteration')} after {self.settings.guard_patience} "
                 "diverged iterations"
                 + (f" ({detail['why']})" if "why" in detail else ""),
                 *[f"  {r}" for r in reasons],
                 f"  rollbacks: {self.rollbacks}",
                 f"  last healthy checkpoint: {latest_checkpoint(self.run_dir, healthy_only=True)}",
                 f"  next: rllib-av diagnose {self.run_dir}"]
        return "\n".join(lines)
