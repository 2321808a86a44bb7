"""The learner's health statistics, each defined once.

A ``Statistic`` says what one number is: its key (in the learner's results,
``metrics.jsonl`` and the verdict), which update computes it and what one update
computes, how an iteration reduces the per-update values, whether it must be
finite, whether it is a Q value (then it counts toward ``q_bound_ratio``), its
Prometheus family and labels, its TensorBoard tag. Everything else derives from
``STATISTICS``: the learner's per-update rows and reductions, the exporter's
gauges and HELP texts, the verdict's finite and bound rules, TensorBoard tags,
TensorBoard read back for diagnose, and the metric reference (docs/metrics.md).
Adding a statistic is one entry here (plus computing it in the learner).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

# Which step computes a statistic: the critic update, the (delayed) actor
# update, the algorithm after each learner call (from the Q statistics), or the
# algorithm as each EnvRunner's fragment of env steps arrives.
CRITIC, ACTOR, ALGORITHM, ARRIVAL = "critic", "actor", "algorithm", "arrival"
_REDUCED_OVER = {
    CRITIC: "the iteration's critic updates",
    ACTOR: "the iteration's actor updates",
    ALGORITHM: "the iteration's learner calls",
    ARRIVAL: "the iteration's arriving EnvRunner fragments",
}
_REDUCE_WORD = {"mean": "Mean", "max": "Max", "min": "Min"}


@dataclass(frozen=True)
class Statistic:
    key: str
    update: str  # CRITIC | ACTOR | ALGORITHM
    per_update: str  # what one update (or learner call) computes
    reduce: str  # how an iteration reduces the per-update values: mean | max | min
    q_value: bool = False  # a Q estimate: counts toward q_bound_ratio, both signs
    finite: bool = True  # NaN/inf here means the learner produced a broken number
    # Prometheus family (rllib_av_<metric>) and the labels that tell this
    # statistic apart inside it; default: its own family named after the key.
    metric: Optional[str] = None
    labels: Tuple[Tuple[str, str], ...] = ()
    tensorboard: Optional[str] = None  # tag; default health/<key>

    @property
    def family(self) -> str:
        return self.metric or self.key

    @property
    def tag(self) -> str:
        return self.tensorboard or f"health/{self.key}"

    @property
    def help(self) -> str:
        """Exactly what the iteration's number is (the exporter's HELP text)."""
        return f"{_REDUCE_WORD[self.reduce]} over {_REDUCED_OVER[self.update]} of {self.per_update}"


_LAG = ("the policy lag: gradient updates the learners made between the weights the "
        "fragment's first env step was sampled with and its arrival (0 when sampling and "
        "learning take turns)")
_Y = "the Bellman targets y = r + gamma^n * min(Q1', Q2')(s', smoothed mu'(s')) * (1 - terminated)"

_LEARNER_STATISTICS = (
    # -- per critic update, on the sampled batch --
    Statistic("q1_mean", CRITIC, "the batch mean of Q1(s, a) on the batch actions", "mean",
              q_value=True),
    Statistic("q2_mean", CRITIC, "the batch mean of Q2(s, a) on the batch actions", "mean",
              q_value=True),
    Statistic("q_target_mean", CRITIC, f"the batch mean of {_Y}", "mean", q_value=True,
              tensorboard="debug/target_q_mean"),
    Statistic("q_target_max", CRITIC, f"the batch max of {_Y}", "max", q_value=True,
              tensorboard="debug/target_q_max"),
    Statistic("q_target_min", CRITIC, f"the batch min of {_Y}", "min", q_value=True,
              tensorboard="debug/target_q_min"),
    Statistic("critic_loss", CRITIC, "MSE(Q1, y) + MSE(Q2, y) on the batch", "mean"),
    Statistic("td_error_abs_mean", CRITIC, "the batch mean of |Q1(s, a) - y|", "mean"),
    Statistic("grad_norm_critic", CRITIC,
              "the pre-clip global gradient norm of the critic optimizer (encoder and both "
              "critics)", "max", metric="grad_norm", labels=(("network", "critic"),)),
    # -- per actor update (every policy_delay-th critic update), on the same batch --
    Statistic("q_actor_mean", ACTOR,
              "the batch mean of Q1(s, mu(s)), the Q the actor loss maximises", "mean",
              q_value=True, tensorboard="debug/actor_q_mean"),
    Statistic("q_actor_max", ACTOR, "the batch max of Q1(s, mu(s))", "max", q_value=True,
              tensorboard="debug/actor_q_max"),
    Statistic("q_actor_min", ACTOR, "the batch min of Q1(s, mu(s))", "min", q_value=True,
              tensorboard="debug/actor_q_min"),
    Statistic("q_actor_std", ACTOR, "the batch std of Q1(s, mu(s))", "mean",
              tensorboard="debug/actor_q_std"),
    Statistic("actor_loss", ACTOR, "the actor loss -mean Q1(s, mu(s)) on the batch", "mean"),
    Statistic("grad_norm_actor", ACTOR,
              "the pre-clip global gradient norm of the actor optimizer", "max",
              metric="grad_norm", labels=(("network", "actor"),)),
)
Q_VALUES: Tuple[str, ...] = tuple(s.key for s in _LEARNER_STATISTICS if s.q_value)

STATISTICS: Tuple[Statistic, ...] = _LEARNER_STATISTICS + (
    # -- per learner call, by the algorithm --
    Statistic("q_bound", ALGORITHM,
              "max(|r_min|, |r_max|) / (1 - gamma) for the declared per-step reward range "
              "[r_min, r_max] in training units (after clipping and scaling)", "mean",
              finite=False),
    Statistic("q_return_min", ALGORITHM,
              "r_min / (1 - gamma), the lowest discounted return the declared per-step reward "
              "range allows, in training units (q_bound is the larger of its and q_return_max's "
              "magnitudes)", "mean", finite=False),
    Statistic("q_return_max", ALGORITHM,
              "r_max / (1 - gamma), the highest discounted return the declared per-step reward "
              "range allows, in training units", "mean", finite=False),
    Statistic("q_return_min_observed", ALGORITHM,
              "min r / (1 - gamma) over every reward stored in replay so far (the lowest "
              "fixed point of the Bellman targets), in training units at the current clip and "
              "scale; logged only without a declared reward range", "mean", finite=False),
    Statistic("q_return_max_observed", ALGORITHM,
              "max r / (1 - gamma) over every reward stored in replay so far (the highest "
              "fixed point of the Bellman targets), in training units at the current clip and "
              "scale; logged only without a declared reward range", "mean", finite=False),
    Statistic("q_bound_ratio", ALGORITHM,
              f"max |v| / q_bound over v in the call's {', '.join(Q_VALUES)} (both signs: "
              "> 1 is beyond what any discounted return can be)", "max", finite=False),
    # -- per arriving fragment, by the algorithm --
    Statistic("policy_lag_mean", ARRIVAL, _LAG, "mean", finite=False),
    Statistic("policy_lag_max", ARRIVAL, _LAG, "max", finite=False),
)

BY_KEY: Dict[str, Statistic] = {s.key: s for s in STATISTICS}
# The statistics each update computes, in the order the learner stacks them,
# with how an iteration reduces each.
CRITIC_STATS: Dict[str, str] = {s.key: s.reduce for s in STATISTICS if s.update == CRITIC}
ACTOR_STATS: Dict[str, str] = {s.key: s.reduce for s in STATISTICS if s.update == ACTOR}
FINITE_REQUIRED: Tuple[str, ...] = tuple(s.key for s in STATISTICS if s.finite)


def families() -> Dict[str, List[Statistic]]:
    """Prometheus family name (without prefix) -> the statistics it carries."""
    out: Dict[str, List[Statistic]] = {}
    for s in STATISTICS:
        out.setdefault(s.family, []).append(s)
    return out


def family_help(stats: List[Statistic]) -> str:
    """One HELP for a family: the statistic's own, or each labelled member's."""
    if len(stats) == 1:
        return stats[0].help
    return "; ".join(f"{','.join(f'{k}={v}' for k, v in s.labels)}: {s.help}" for s in stats)


def tensorboard_keys() -> Dict[str, str]:
    """TensorBoard tag -> statistic key (for reading a run's events back)."""
    return {s.tag: s.key for s in STATISTICS}

