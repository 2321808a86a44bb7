"""One training result dict -> the health numbers of that iteration.

RLlib has already reduced everything (learner stats per module, EnvRunner
metrics merged across all EnvRunners); this module only picks the keys out of
the nested result and derives the few numbers that are not reported directly
(reward component shares, whether the local EnvRunner sampled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple

from rllib_av.envs.reward import COMPONENTS as REWARD_COMPONENTS
from rllib_av.replay.episode_chunk import NONFINITE_PARTS
from rllib_av.health.statistics import BY_KEY

NUM_UPDATES_LIFETIME = "num_updates_lifetime"
# Learner results read per module: the statistics spec, plus the update count.
LEARNER_STATS = tuple(BY_KEY) + (NUM_UPDATES_LIFETIME,)
# Where NaN/inf is counted (lifetime totals): "obs" / "reward" = episode
# chunks dropped before the replay buffer for a non-finite observation /
# reward (a chunk with both counts in both); "loss" / "grads" = learner steps
# skipped for a non-finite loss or gradient norm.
NONFINITE_WHERE = NONFINITE_PARTS + ("loss", "grads")
# Runs recorded before obs and reward were told apart count both as "replay"
# (metrics.jsonl's nonfinite/replay).
NONFINITE_UNTOLD = "replay"

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

# A lifetime total: (counter name, its labels beyond run/config).
CounterKey = Tuple[str, Tuple[Tuple[str, str], ...]]


@dataclass
class IterationMetrics:
    step: int  # env steps sampled, lifetime (the x axis of every record)
    iteration: int = 0
    modules: Dict[str, Dict[str, float]] = field(default_factory=dict)
    reward_mean: Dict[str, float] = field(default_factory=dict)
    reward_share: Dict[str, float] = field(default_factory=dict)
    episode_return_mean: Optional[float] = None
    episode_length_mean: Optional[float] = None
    # EnvRunner actors alive (RLlib's fault tolerance); sampling in the driver:
    # 1 if this iteration sampled env steps, else 0.
    env_runners_healthy: int = 0
    env_runners_desired: int = 1
    # Lifetime totals as RLlib reports them (they go back with a restored checkpoint).
    lifetime: Dict[CounterKey, float] = field(default_factory=dict)

    @property
    def nonfinite_lifetime(self) -> Dict[str, float]:
        return {dict(labels)["where"]: v for (name, labels), v in self.lifetime.items()
                if name == "nonfinite"}


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


# Shares of a total under this fraction of the per-step reward scale are no
# data: a car standing still has every component 0 but for ~1e-16 of rounding,
# and 1e-16 / 1e-16 is not a component dominating.
SHARE_MIN_FRACTION = 1e-6


def reward_shares(abs_means: Mapping[str, float],
                  reward_range: Optional[Sequence[float]] = None) -> Dict[str, float]:
    """mean |component| / sum of mean |component| over the five components;
    none ({}) when that sum is no signal: 0, or under SHARE_MIN_FRACTION of
    the declared per-step scale max(|r_min|, |r_max|) (raw units, as the
    components are) where a range is declared."""
    parts = {c: abs_means[c] for c in REWARD_COMPONENTS
             if c in abs_means and math.isfinite(abs_means[c])}
    total = sum(parts.values())
    floor = 0.0 if reward_range is None else SHARE_MIN_FRACTION * max(map(abs, reward_range))
    return {c: v / total for c, v in parts.items()} if total > floor else {}


def from_result(result: Mapping, num_env_runners: int,
                reward_range: Optional[Sequence[float]] = None) -> IterationMetrics:
    """``reward_range``: the declared per-step range (raw units) the reward
    shares are judged against (``reward_shares``)."""
    learners = result.get("learners", {}) or {}
    runners = result.get("env_runners", {}) or {}
    modules = {mid: _floats(stats, LEARNER_STATS if _trained(stats) else (NUM_UPDATES_LIFETIME,))
               for mid, stats in learners.items()
               if isinstance(stats, Mapping) and any(k in stats for k in LEARNER_STATS)}

    dropped = result.get("nonfinite", {}) or {}
    lifetime: Dict[CounterKey, float] = {
        **{("nonfinite", (("where", part),)): _num(dropped.get(part)) or 0.0
           for part in NONFINITE_PARTS},
        ("nonfinite", (("where", "loss"),)):
            sum(_num(learners[mid].get("nonfinite_loss")) or 0.0 for mid in modules),
        ("nonfinite", (("where", "grads"),)):
            sum(_num(learners[mid].get("nonfinite_grads")) or 0.0 for mid in modules),
        ("sim_server_restarts", ()): _num(runners.get(SIM_SERVER_RESTARTS_KEY)) or 0.0,
    }
    for mid, stats in modules.items():
        if NUM_UPDATES_LIFETIME in stats:
            lifetime[("learner_updates", (("module", mid),))] = stats[NUM_UPDATES_LIFETIME]

    if num_env_runners > 0:
        fault = result.get("fault_tolerance", {}) or {}
        healthy = int(_num(fault.get("num_healthy_workers")) or 0)
        lifetime[("env_runner_restarts", ())] = _num(fault.get("num_remote_worker_restarts")) or 0.0
    else:
        # No EnvRunner actor: the driver's own EnvRunner is healthy if it sampled.
        healthy = int((_num(runners.get("num_env_steps_sampled")) or 0.0) > 0)
        lifetime[("env_runner_restarts", ())] = 0.0

    env_steps = _num(runners.get("num_env_steps_sampled_lifetime"))
    if env_steps is not None:
        lifetime[("env_steps", ())] = env_steps
    abs_means = _floats(runners.get(REWARD_ABS_MEAN_KEY, {}) or {}, REWARD_COMPONENTS)
    return IterationMetrics(
        step=int(env_steps if env_steps is not None else result.get("training_iteration", 0)),
        iteration=int(result.get("training_iteration", 0)),
        modules=modules,
        reward_mean=_floats(runners.get(REWARD_MEAN_KEY, {}) or {}, REWARD_COMPONENTS + ("total",)),
        reward_share=reward_shares(abs_means, reward_range),
        episode_return_mean=_episode_stat(runners.get("episode_return_mean")),
        episode_length_mean=_episode_stat(runners.get("episode_len_mean")),
        env_runners_healthy=healthy,
        env_runners_desired=max(num_env_runners, 1),
        lifetime=lifetime,
    )
