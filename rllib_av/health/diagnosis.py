"""`rllib-av diagnose RUN_DIR`: the incident's decision tree, walked automatically.

Reads a finished or running run directory (metrics.jsonl, probes.jsonl,
config.yaml, tensorboard/) and asks, in order, each question with the numbers
behind it:

  1. Does what TensorBoard shows differ from what the learner computed
     (metrics.jsonl)?                                -> logging / calculation error
  2. Is a reward component beyond its declared range or dominating, or are the
     rewards reaching the critic scaled beyond the declared range?  -> reward scaling
  3. Are the Bellman targets unrealistic against the bound, the rewards summed
     along episodes, or terminal transitions bootstrapped?  -> bootstrap error
  4. Is Q beyond the bound (or far above the Monte-Carlo return) with sane
     rewards and targets?  -> critic overestimation
  else healthy.

Learner statistics are read at the onset: the first iteration that was not
healthy (else the last one); the probes from the newest probe record.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import yaml
from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_av.config_schema import from_dict
from rllib_av.envs.env_settings import EnvSettings
from rllib_av.envs.reward import raw_ranges
from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.preflight import read_records
from rllib_av.health.probes import read_probes
from rllib_av.health.q_bound import largest_q
from rllib_av.health.statistics import BY_KEY
from rllib_av.health.tensorboard_records import record_key, tensorboard_scalars

DOMINANT_SHARE = 0.9
# TensorBoard keeps float32: a published value matches the learner's within this.
PUBLISHED_REL_TOL = 1e-5

REMEDIES = {
    "logging": ["check the TensorBoard writer's tags against the statistics spec "
                "(rllib_av/health/statistics.py)",
                "check the reductions (mean vs max, per update vs per iteration) of logged stats"],
    "reward_scaling": ["bring the per-step reward into its declared range: fix the scale, or set "
                       "training.reward_clip / training.reward_scaling",
                       "rebalance env.reward.weights so no component dominates",
                       "declare the range the critic really trains on (training.reward_range)"],
    "bootstrap": ["mask the bootstrap with (1 - terminated) only (truncation must not mask it)",
                  "check gamma (and gamma^n for n-step) in the target",
                  "return per-step rewards, not running sums, from the env"],
    "overestimation": ["lower training.critic_lr", "set training.critic_grad_clip",
                       "stronger target smoothing: raise training.policy_noise, lower training.tau",
                       "keep health.guard_action: rollback for long runs"],
}


@dataclass
class Step:
    question: str
    evidence: List[str] = field(default_factory=list)
    fired: bool = False


@dataclass
class Diagnosis:
    branch: str  # healthy | logging | reward_scaling | bootstrap | overestimation
    steps: List[Step]
    focus: Optional[Dict]
    probe: Dict
    worst: Optional[str] = None  # the farthest Q got from zero, and which way

    def format(self) -> str:
        lines = [self.worst] if self.worst else []
        if self.focus is not None:
            lines.append(f"learner stats at iteration {self.focus.get('training_iteration')} "
                         f"(env step {self.focus.get('env_steps')})"
                         + (f"; probes at env step {self.probe.get('env_steps')}" if self.probe else
                            "; no probe record"))
        for i, s in enumerate(self.steps, 1):
            lines.append(f"{i}. {s.question} -> {'YES' if s.fired else 'no'}")
            lines.extend(f"     {e}" for e in s.evidence)
        lines.append(f"branch: {self.branch}")
        for r in REMEDIES.get(self.branch, []):
            lines.append(f"  remedy: {r}")
        return "\n".join(lines)


def _s(record: Dict, key: str) -> Optional[float]:
    v = record.get(f"{DEFAULT_MODULE_ID}/{key}")
    return None if v is None else float(v)


def _ends(lo: float, hi: float, bound: float) -> Tuple[float, str]:
    """max(|lo|, |hi|) / bound, and which way Q runs if it is beyond."""
    ratio = max(abs(lo), abs(hi)) / bound
    if not ratio > 1.0:
        return ratio, ""
    return ratio, " (running off downward)" if abs(lo) >= abs(hi) else " (running off upward)"


def worst_q(records: List[Dict]) -> Optional[str]:
    """Where |Q| / bound peaked over the run, naming the statistic and its sign."""
    peaks = [(_s(r, "q_bound_ratio"), r) for r in records]
    peaks = [(ratio, r) for ratio, r in peaks if ratio is not None and not math.isnan(ratio)]
    if not peaks:
        return None
    ratio, r = max(peaks, key=lambda p: p[0])
    stats = {k.split("/", 1)[1]: v for k, v in r.items()
             if k.startswith(f"{DEFAULT_MODULE_ID}/") and v is not None}
    top = largest_q(stats)
    where = "" if top is None else (
        f": {top[0]} {top[1]:.4g}" + (", running off downward" if top[1] < 0 and ratio > 1
                                      else ", running off upward" if ratio > 1 else ""))
    return (f"worst |Q|: {ratio:.3g}x the bound {_s(r, 'q_bound'):.4g} at iteration "
            f"{r.get('training_iteration')} (env step {r.get('env_steps')}){where}")


def published_mismatches(run_dir: str, records: List[Dict]) -> Tuple[int, List[str]]:
    """Compare every learner statistic TensorBoard holds with what the learner
    computed for the same env step (metrics.jsonl). Returns (values compared,
    descriptions of those that match no computed value)."""
    computed: Dict[Tuple[str, int], List[float]] = {}
    for r in records:
        for key, v in r.items():
            if key.startswith(f"{DEFAULT_MODULE_ID}/") and key.split("/", 1)[1] in BY_KEY:
                computed.setdefault((key, int(r["env_steps"])), []).append(float(v))
    compared, bad = 0, []
    for step, tag, value in tensorboard_scalars(run_dir):
        key = record_key(tag)
        if (key, step) not in computed:
            continue
        compared += 1
        if not any(math.isclose(value, c, rel_tol=PUBLISHED_REL_TOL, abs_tol=1e-6)
                   or (math.isnan(value) and math.isnan(c)) for c in computed[(key, step)]):
            bad.append(f"{tag} at env step {step}: TensorBoard {value:.6g}, learner "
                       + " / ".join(f"{c:.6g}" for c in computed[(key, step)]))
    return compared, bad


def onset(records: List[Dict], warn_ratio: float) -> Optional[Dict]:
    """The first iteration that was not healthy, else the last one with learner stats."""
    with_stats = [r for r in records if _s(r, "q_actor_mean") is not None]
    for r in with_stats:
        ratio = _s(r, "q_bound_ratio")
        if (r.get("divergence_state") or 0) >= 1 or (ratio is not None and ratio > warn_ratio):
            return r
    return with_stats[-1] if with_stats else None


def declared_component_ranges(env: EnvSettings) -> Dict[str, tuple]:
    if env.id != "driving":
        return {}
    w = env.reward.weights
    return {c: tuple(sorted((getattr(w, c) * lo, getattr(w, c) * hi)))
            for c, (lo, hi) in raw_ranges(env).items()}


def run_sections(run_dir: str) -> Tuple[EnvSettings, HealthSettings]:
    """The env and health sections of the run's resolved config.yaml."""
    with open(os.path.join(run_dir, "config.yaml")) as f:
        data = yaml.safe_load(f) or {}
    return (from_dict(EnvSettings, data.get("env"), "env"),
            from_dict(HealthSettings, data.get("health"), "health"))


def diagnose(run_dir: str) -> Diagnosis:
    env, health = run_sections(run_dir)
    records = read_records(run_dir)
    probes = read_probes(run_dir)
    probe = probes[-1] if probes else {}
    focus = onset(records, health.q_bound_warn_ratio)
    steps: List[Step] = []

    def finish(branch: str) -> Diagnosis:
        return Diagnosis(branch, steps, focus, probe, worst_q(records))

    f = focus or {}
    bound = _s(f, "q_bound")

    # 1. logging / calculation
    s = Step("published numbers differ from what the learner computed "
             "(logging / calculation error)?")
    compared, bad = (published_mismatches(run_dir, records)
                     if os.path.isfile(os.path.join(run_dir, "metrics.jsonl")) else (0, []))
    if compared:
        s.evidence.append(f"{compared} TensorBoard values of learner statistics against "
                          f"metrics.jsonl: {len(bad)} differ (tolerance {PUBLISHED_REL_TOL:g} "
                          "relative)")
        s.evidence.extend(bad[:3])
        s.fired = bool(bad)
    else:
        s.evidence.append("not measurable: no TensorBoard values next to metrics.jsonl "
                          "(monitoring.tensorboard off, or only one of them kept)")
    steps.append(s)
    if s.fired:
        return finish("logging")

    # 2. reward scaling
    s = Step("reward component beyond its declared range or dominating, or critic rewards scaled?")
    ranges = declared_component_ranges(env)
    means = [r for r in records if any(k.startswith("reward_components/") for k in r)]
    last = means[-1] if means else {}
    for comp, (lo, hi) in ranges.items():
        v = last.get(f"reward_components/{comp}")
        if v is not None and not lo - 1e-6 <= v <= hi + 1e-6:
            s.fired = True
            s.evidence.append(f"{comp} mean {v:.4g} outside its declared [{lo:.4g}, {hi:.4g}]")
    shares = {k.split("/", 1)[1]: v for k, v in last.items() if k.startswith("reward_share/")}
    if shares:
        top = max(shares, key=shares.get)
        s.evidence.append(f"largest share: {top} {shares[top]:.2f} "
                          f"(dominating above {DOMINANT_SHARE})")
        s.fired |= shares[top] > DOMINANT_SHARE
    if "reward_pipeline" in probe:
        s.evidence.append(f"critic's rewards in [{probe['reward_train_min']:.4g}, "
                          f"{probe['reward_train_max']:.4g}] vs declared "
                          f"[{probe['reward_range_min']:.4g}, {probe['reward_range_max']:.4g}]: "
                          f"{probe['reward_beyond_frac']:.1%} beyond, first steps "
                          f"{probe.get('reward_first_step_beyond_frac', float('nan')):.1%} beyond "
                          f"-> {probe['reward_pipeline']}")
        s.fired |= probe["reward_pipeline"] == "scale"
    steps.append(s)
    if s.fired:
        return finish("reward_scaling")

    # 3. bootstrap / accumulation
    s = Step("targets unrealistic against the bound, rewards accumulated, "
             "or terminals bootstrapped?")
    t_max, t_min = _s(f, "q_target_max"), _s(f, "q_target_min")
    if bound and t_max is not None and t_min is not None:
        t_ratio, way = _ends(t_min, t_max, bound)
        s.evidence.append(f"q_target in [{t_min:.4g}, {t_max:.4g}], "
                          f"{t_ratio:.3g} x bound {bound:.4g}{way}")
        s.fired |= not t_ratio <= 1.0
    if probe.get("reward_pipeline") == "accumulation":
        s.fired = True
        s.evidence.append(f"critic's rewards grow along episodes: late/first-step |r| "
                          f"{probe['reward_growth']:.3g}x while first steps stay in range "
                          "(rewards are running sums)")
    if "terminal_masking" in probe:
        s.evidence.append(f"on {probe['terminal_transitions']} terminal transitions |Q - r| "
                          f"{probe['terminal_residual_masked']:.3g} vs |Q - (r + gamma Q')| "
                          f"{probe['terminal_residual_unmasked']:.3g} "
                          f"-> {probe['terminal_masking']}")
        s.fired |= probe["terminal_masking"] == "unmasked"
    steps.append(s)
    if s.fired:
        return finish("bootstrap")

    # 4. critic overestimation
    s = Step("Q beyond the bound or far above the Monte-Carlo return, "
             "with sane rewards and targets?")
    a_max, a_min = _s(f, "q_actor_max"), _s(f, "q_actor_min")
    if bound and a_max is not None and a_min is not None:
        a_ratio, way = _ends(a_min, a_max, bound)
        s.evidence.append(f"Q1(s, mu(s)) in [{a_min:.4g}, {a_max:.4g}], {a_ratio:.3g} x bound{way}")
        s.fired |= not a_ratio <= 1.0
    if "overestimation_ratio" in probe:
        ratio = probe["overestimation_ratio"]
        s.evidence.append(f"Q - MC return on {probe['overestimation_states']} evaluation states: "
                          f"{probe['overestimation_bias']:.4g} ({ratio:.3g} x bound)")
        s.fired |= ratio > health.preflight_overestimation_max
    grad = _s(f, "grad_norm_critic")
    if grad is not None:
        s.evidence.append(f"critic grad norm {grad:.4g}")
    steps.append(s)
    if s.fired:
        return finish("overestimation")
    return finish("healthy")
