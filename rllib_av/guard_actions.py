"""Carrying out the divergence guard's decisions (rllib_av/health/guard.py) on a
running algorithm: restore the healthy checkpoint, put the remedy on every
learner, record the action in ``guard.jsonl`` (and a stop's report).

The remedy is also re-applied when a run resumes from a checkpoint whose
``GuardState`` says rollbacks happened (``resume_remedy``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Dict, Optional

from rllib_av.checkpoints import latest_checkpoint, read_meta
from rllib_av.health.guard import (
    GUARD_FILE, REPORT_FILE, DivergenceGuard, GuardDecision, GuardState,
)

logger = logging.getLogger(__name__)


def set_critic_lr(learner, lr: float) -> None:
    """Set every module's critic optimizer to ``lr`` (also RLlib's fixed-value
    scheduler, which would otherwise put the old rate back after each update)."""
    for module_id in learner.module.keys():
        optim = learner.get_optimizer(module_id, "critic")
        schedule = learner._optimizer_lr_schedules.get(optim)
        if schedule is not None and not schedule.use_schedule:
            schedule._curr_value = lr
        learner._set_optimizer_lr(optim, lr)


def apply_remedy(algo, critic_lr: float, policy_noise: float) -> None:
    def remedy(learner):
        set_critic_lr(learner, critic_lr)
        learner.policy_noise_override = policy_noise

    algo.learner_group.foreach_learner(remedy)


def resume_remedy(algo, state: GuardState) -> None:
    """After restoring a checkpoint saved with ``state``: the remedy back on."""
    if state.rollbacks:
        apply_remedy(algo, state.critic_lr, state.policy_noise)


def carry_out(decision: GuardDecision, guard: DivergenceGuard, algo, run_dir: str,
              result: Dict) -> Optional[str]:
    """Do what ``decision`` says; returns the stop report for a stop, else None."""
    entry = {"time_s": time.time(), "training_iteration": result.get("training_iteration"),
             "env_steps": result.get("env_runners", {}).get("num_env_steps_sampled_lifetime"),
             "action": decision.action, "reasons": decision.reasons, **decision.detail()}
    if decision.action == "rollback":
        algo.restore_from_path(decision.checkpoint)
        apply_remedy(algo, decision.critic_lr, decision.policy_noise)
        entry["checkpoint_env_steps"] = read_meta(decision.checkpoint)["env_steps"]
    logger.warning("divergence guard: %s at iteration %s (%s) %s", decision.action,
                   entry["training_iteration"], "; ".join(decision.reasons), decision.detail())
    with open(os.path.join(run_dir, GUARD_FILE), "a") as f:
        f.write(json.dumps(entry) + "\n")
    if decision.action != "stop":
        return None
    report = guard.stop_report(decision, result.get("training_iteration"), run_dir,
                               latest_checkpoint(run_dir, healthy_only=True))
    with open(os.path.join(run_dir, REPORT_FILE), "w") as f:
        f.write(report + "\n")
    return report
