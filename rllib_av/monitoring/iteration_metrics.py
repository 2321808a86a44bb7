"""One training result dict -> the health numbers DESIGN.md names.

RLlib has already reduced everything (learner stats per module, EnvRunner
metrics merged across all EnvRunners); this module only picks the keys out of
the nested result and derives the few numbers that are not reported directly
(reward component shares, EnvRunner health when sampling locally).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional

# Learner statistics each module reports (TD3 learner contract).
LEARNER_STATS = (
    "q_actor_mean", "q_actor_max", "q_actor_min", "q_actor_std",
    "q_target_mean", "q_target_max", "q_target_min", "q1_mean", "q2_mean",
    "critic_loss", "actor_loss", "grad_norm_actor", "grad_norm_critic",
    "td_error_abs_mean", "q_bound", "q_bound_ratio", "num_updates_lifetime",
)
LIFETIME_LEARNER_STATS = ("num_updates_lifetime",)
REWARD_COMPONENTS = ("efficiency", "lane_keeping", "comfort", "safety", "progress")
# Where NaN/inf is counted (lifetime totals): "replay" = episode chunks with a
# non-finite observation or reward, dropped by the TD3 replay buffer (it checks
# both at once); "loss" / "grads" = learner steps skipped for a non-finite loss
# or gradient norm.
NONFINITE_WHERE = ("replay", "loss", "grads")

# EnvRunner-side metric keys written by HealthCallbacks.on_episode_step.
REWARD_MEAN_KEY = "reward_components"
REWARD_ABS_MEAN_KEY = "reward_components_abs"
# Per-episode component sums (mean over the iteration's episodes) and the
# iteration's shares, as they appear in result["env_runners"].
REWARD_EPISODE_SUM_KEY = "reward_components_episode_sum"
REWARD_SHARE_KEY = "reward_components_share"
# Lifetime count of simulator restarts: DrivingEnv reports each backend recovery
# once in info, HealthCallbacks logs it (reduce="lifetime_sum").
SIM_SERVER_RESTARTS_KEY = "sim_server_restarts"


@dataclass
class IterationMetrics:
    step: int
    modules: Dict[str, Dict[str, float]] = field(default_factory=dict)
    reward_mean: Dict[str, float] = field(default_factory=dict)
    reward_share: Dict[str, float] = field(default_factory=dict)
    episode_return_mean: Optional[float] = None
    episode_length_mean: Optional[float] = None
    env_steps_lifetime: Optional[float] = None
    env_runners_healthy: int = 0
    env_runners_desired: int = 1
    env_runner_restarts_lifetime: float = 0.0
    sim_server_restarts_lifetime: float = 0.0
    # Lifetime NaN/inf counts by where they were seen.
    nonfinite_lifetime: Dict[str, float] = field(default_factory=dict)


def _num(x) -> Optional[float]:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _episode_stat(x) -> Optional[float]:
    """RLlib reports NaN for an iteration in which no episode ended: no data."""
    v = _num(x)
    return v if v is not None and math.isfinite(v) else None


def _floats(d: Mapping, keys) -> Dict[str, float]:
    out = {}
    for k in keys:
        v = _num(d.get(k)) if isinstance(d, Mapping) else None
        if v is not None:
            out[k] = v
    return out


def _trained(stats: Mapping) -> bool:
    """Whether the module made a gradient update this iteration. Without one,
    RLlib reduces every per-iteration stat to NaN: no data, not a broken critic
    (a NaN loss from a real update still counts steps trained)."""
    steps = _num(stats.get("num_module_steps_trained"))
    return steps is None or math.isfinite(steps)


def reward_shares(abs_means: Mapping[str, float]) -> Dict[str, float]:
    """mean |component| / sum of mean |component| over the five components."""
    parts = {c: abs_means[c] for c in REWARD_COMPONENTS
             if c in abs_means and math.isfinite(abs_means[c])}
    total = sum(parts.values())
    return {c: v / total for c, v in parts.items()} if total > 0 else {}


def from_result(result: Mapping, num_env_runners: int) -> IterationMetrics:
    learners = result.get("learners", {}) or {}
    runners = result.get("env_runners", {}) or {}
    modules = {mid: _floats(stats, LEARNER_STATS if _trained(stats) else LIFETIME_LEARNER_STATS)
               for mid, stats in learners.items()
               if isinstance(stats, Mapping) and any(k in stats for k in LEARNER_STATS)}

    nonfinite = {
        "replay": _num((result.get("nonfinite", {}) or {}).get("replay_chunks_dropped")) or 0.0,
        "loss": sum(_num(learners[mid].get("nonfinite_loss")) or 0.0 for mid in modules),
        "grads": sum(_num(learners[mid].get("nonfinite_grads")) or 0.0 for mid in modules),
    }

    if num_env_runners > 0:
        fault = result.get("fault_tolerance", {}) or {}
        healthy = int(_num(fault.get("num_healthy_workers")) or 0)
        restarts = _num(fault.get("num_remote_worker_restarts")) or 0.0
    else:
        # Sampling in the driver: the one local EnvRunner is up while we run.
        healthy, restarts = 1, 0.0

    env_steps = _num(runners.get("num_env_steps_sampled_lifetime"))
    abs_means = _floats(runners.get(REWARD_ABS_MEAN_KEY, {}) or {}, REWARD_COMPONENTS)
    return IterationMetrics(
        step=int(env_steps if env_steps is not None else result.get("training_iteration", 0)),
        modules=modules,
        reward_mean=_floats(runners.get(REWARD_MEAN_KEY, {}) or {}, REWARD_COMPONENTS + ("total",)),
        reward_share=reward_shares(abs_means),
        episode_return_mean=_episode_stat(runners.get("episode_return_mean")),
        episode_length_mean=_episode_stat(runners.get("episode_len_mean")),
        env_steps_lifetime=env_steps,
        env_runners_healthy=healthy,
        env_runners_desired=max(num_env_runners, 1),
        env_runner_restarts_lifetime=restarts,
        sim_server_restarts_lifetime=_num(runners.get(SIM_SERVER_RESTARTS_KEY)) or 0.0,
        nonfinite_lifetime=nonfinite,
    )
