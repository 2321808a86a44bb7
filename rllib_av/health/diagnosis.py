"""`rllib-av diagnose RUN_DIR`: the incident's decision tree, walked automatically.

Reads a finished or running run directory (metrics.jsonl, probes.jsonl,
config.yaml, tensorboard/) and explains the worst state the run reached: the
iteration where the verdict was worst (then |Q| / bound highest), with the
verdict's reasons there, and when that state began (the first iteration that
was not healthy, and the first that diverged). It then asks, in order, each
question with the numbers behind it, the threshold and why it holds:

  1. Does what TensorBoard shows differ from what the learner computed
     (metrics.jsonl)?                                -> logging / calculation error
  2. Did the env return NaN/inf in observations (chunks dropped before the
     replay, counted as nonfinite_total{where="obs"})? -> observation
  3. Is a reward beyond its declared range (a component, or the rewards the
     critic trains on: scaled, or summed along episodes), not finite (NaN/inf
     the env returned in the probes' rollouts, or counted in training), or one
     component dominating?                           -> reward scaling
  4. Is the Bellman update itself wrong: targets on terminal transitions that
     are not the reward alone (checked in the learner)? -> bootstrap error
  5. Is Q beyond the bound (or past a short end of the return interval) with
     sane rewards and a correct update, or the overestimation bias growing
     beyond the returns' scale?                               -> critic
     overestimation / divergence (the TD update is unstable)
  else healthy, or "unexplained" when the verdict was not healthy but no
  question accounts for it (its reasons are printed).

Targets beyond the bound are evidence, not a branch of their own: a critic
that diverges drags its targets along, so only the structural checks of
question 4 tell a wrong Bellman update from an unstable one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import yaml
from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_av.config_schema import from_dict
from rllib_av.envs.env_settings import DRIVING_ENV_ID, EnvSettings
from rllib_av.envs.reward import raw_ranges
from rllib_av.health.divergence import (
    TERMINAL_THRESHOLD, WHY_BOUND, WHY_INTERVAL, WHY_REWARDS, WHY_TERMINAL, DivergenceState,
    interval_threshold, rewards_measured, rewards_threshold, terminal_measured,
)
from rllib_av.health.health_monitor import HEALTH_REASONS_KEY
from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.iteration_metrics import NONFINITE_UNTOLD
from rllib_av.health.overestimation import judge_overestimation
from rllib_av.health.preflight import observed_bound, read_records, worst_excursion
from rllib_av.health.probes import read_probes
from rllib_av.health.q_bound import largest_q
from rllib_av.health.statistics import BY_KEY
from rllib_av.health.tensorboard_records import record_key, tensorboard_scalars
from rllib_av.replay.episode_chunk import NONFINITE_PARTS

DOMINANT_SHARE = 0.9
WHY_DOMINANT = (f"a component with more than {DOMINANT_SHARE:.0%} of the reward magnitude leaves "
                "the others no say in the policy")
WHY_COMPONENT = "each component is bounded by construction (envs/reward.py); outside it is a bug"
WHY_NONFINITE_REWARD = ("training drops every chunk holding one (counted as "
                        "nonfinite_total{where=\"reward\"}), so the critic never sees why")
WHY_NONFINITE_DROP = ("a chunk holding NaN/inf is dropped whole, so the critic never trains on "
                      "it; an env that keeps returning them starves the replay and the verdict "
                      "counts them as diverged once they persist")
# TensorBoard keeps float32: a published value matches the learner's within this.
PUBLISHED_REL_TOL = 1e-5
WHY_PUBLISHED = ("TensorBoard stores float32; a larger difference means the writer published "
                 "another number than the learner computed")

REMEDIES = {
    "logging": ["check the TensorBoard writer's tags against the statistics spec "
                "(rllib_av/health/statistics.py)",
                "check the reductions (mean vs max, per update vs per iteration) of logged stats"],
    "reward_scaling": ["return per-step rewards from the env, not running sums",
                       "return a finite reward on every step (guard divisions, logs, sqrt)",
                       "bring the per-step reward into its declared range: fix the scale, or set "
                       "training.reward_clip / training.reward_scaling",
                       "declare the range the critic really trains on (training.reward_range)",
                       "rebalance env.reward.weights so no component dominates"],
    "observation": ["return a finite observation on every step: guard the divisions, logs "
                    "and normalizations that build the state vector",
                    "check the sensor or simulator reading behind the observation (a NaN from "
                    "a lost sensor, a position after a simulator reset)",
                    "clip or replace NaN/inf in an observation wrapper where the env cannot be "
                    "fixed (gymnasium.wrappers.TransformObservation)"],
    "bootstrap": ["mask the bootstrap with (1 - terminated) only (truncation must not mask it)",
                  "check gamma (and gamma^n for n-step) in the target"],
    "overestimation": ["lower training.critic_lr", "set training.critic_grad_clip",
                       "stronger target smoothing: raise training.policy_noise, lower training.tau",
                       "keep health.guard_action: rollback for long runs"],
    "unexplained": ["read the verdict's reasons above: each names what it measured"],
}
STATE_NAMES = {int(s): s.name.lower() for s in DivergenceState}


@dataclass
class Step:
    question: str
    evidence: List[str] = field(default_factory=list)
    fired: bool = False


@dataclass
class Diagnosis:
    # healthy | logging | observation | reward_scaling | bootstrap | overestimation |
    # unexplained
    branch: str
    steps: List[Step]
    focus: Optional[Dict]  # the worst iteration, whose learner stats the tree reads
    probe: Dict
    summary: List[str] = field(default_factory=list)  # the worst state and when it began

    def format(self) -> str:
        lines = list(self.summary)
        if self.focus is not None:
            lines.append(f"learner stats at iteration {self.focus.get('training_iteration')} "
                         f"(env step {self.focus.get('env_steps')}, the worst)"
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


def _state(record: Dict) -> int:
    return int(record.get("divergence_state") or 0)


def _ratio_key(record: Dict) -> float:
    ratio = _s(record, "q_bound_ratio")
    if ratio is None:
        return -1.0
    return math.inf if math.isnan(ratio) else ratio


def _ends(lo: float, hi: float, bound: float) -> Tuple[float, str]:
    """max(|lo|, |hi|) / bound, and which way Q runs if it is beyond."""
    ratio = max(abs(lo), abs(hi)) / bound
    if not ratio > 1.0:
        return ratio, ""
    return ratio, " (running off downward)" if abs(lo) >= abs(hi) else " (running off upward)"


def worst(records: List[Dict]) -> Optional[Dict]:
    """The iteration with the worst verdict, then the highest |Q| / bound (the
    earliest of equals); None without learner statistics."""
    with_stats = [r for r in records if _s(r, "q_actor_mean") is not None
                  or _s(r, "q_target_mean") is not None]
    if not with_stats:
        return None
    return max(with_stats, key=lambda r: (_state(r), _ratio_key(r)))


def _at(r: Dict) -> str:
    return f"iteration {r.get('training_iteration')} (env step {r.get('env_steps')})"


def _reasons(r: Dict) -> List[str]:
    return [reason for reasons in (r.get(HEALTH_REASONS_KEY) or {}).values() for reason in reasons]


def worst_state_summary(records: List[Dict], focus: Optional[Dict]) -> List[str]:
    """The worst state, why the verdict said so there, and when it began."""
    if focus is None:
        return ["no learner statistics yet (no gradient update recorded)"]
    state = _state(focus)
    lines = []
    ratio, bound = _s(focus, "q_bound_ratio"), _s(focus, "q_bound")
    if ratio is not None and bound:
        top = largest_q({k.split("/", 1)[1]: v for k, v in focus.items()
                         if k.startswith(f"{DEFAULT_MODULE_ID}/") and v is not None})
        where = "" if top is None else f": {top[0]} {top[1]:.4g}" + (
            (", running off downward" if top[1] < 0 else ", running off upward")
            if ratio > 1 else "")
        q_text = f"|Q| {ratio:.3g}x the bound {bound:.4g}{where}"
    else:
        q_text = "no Q bound (no declared reward range)"
    if state == DivergenceState.HEALTHY:
        return [f"worst state: healthy throughout {len(records)} iterations; "
                f"worst |Q| at {_at(focus)}: {q_text}"]
    lines.append(f"worst state: {STATE_NAMES[state]} at {_at(focus)}: {q_text}")
    lines.extend(f"  verdict: {reason}" for reason in _reasons(focus))
    first = next(r for r in records if _state(r) >= DivergenceState.WARNING)
    began = f"began: {STATE_NAMES[_state(first)]} from {_at(first)}"
    diverged = next((r for r in records if _state(r) >= DivergenceState.DIVERGED), None)
    if diverged is not None and diverged is not first:
        began += f"; diverged from {_at(diverged)}"
    lines.append(began)
    if first is not focus:
        lines.extend(f"  first verdict: {reason}" for reason in _reasons(first))
    return lines


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


def declared_component_ranges(env: EnvSettings) -> Dict[str, tuple]:
    if env.id != DRIVING_ENV_ID:
        return {}
    w = env.reward.weights
    return {c: tuple(sorted((getattr(w, c) * lo, getattr(w, c) * hi)))
            for c, (lo, hi) in raw_ranges(env).items()}


def run_sections(run_dir: str) -> Tuple[EnvSettings, HealthSettings, Optional[float]]:
    """The env and health sections of the run's resolved config.yaml, and its
    discount (training.gamma)."""
    with open(os.path.join(run_dir, "config.yaml")) as f:
        data = yaml.safe_load(f) or {}
    gamma = (data.get("training") or {}).get("gamma")
    return (from_dict(EnvSettings, data.get("env"), "env"),
            from_dict(HealthSettings, data.get("health"), "health"),
            None if gamma is None else float(gamma))


def nonfinite_dropped(records: List[Dict]) -> Dict[str, float]:
    """where -> the run's lifetime count of chunks dropped for NaN/inf there
    (the newest record's; "replay" in runs that did not tell obs from reward)."""
    out: Dict[str, float] = {}
    for r in records:
        for where in NONFINITE_PARTS + (NONFINITE_UNTOLD,):
            v = r.get(f"nonfinite/{where}")
            if v is not None:
                out[where] = float(v)
    return out


def _first_found(probes: List[Dict], key: str, bad: Tuple[str, ...]) -> Dict:
    """The first probe whose ``key`` is one of ``bad`` (a broken pipeline stays
    broken), else the newest that measured it; {} if none did."""
    measured = [p for p in probes if key in p]
    return next((p for p in measured if p[key] in bad), measured[-1] if measured else {})


def diagnose(run_dir: str) -> Diagnosis:
    env, health, gamma = run_sections(run_dir)
    records = read_records(run_dir)
    probes = read_probes(run_dir)
    probe = probes[-1] if probes else {}
    focus = worst(records)
    steps: List[Step] = []

    def finish(branch: str) -> Diagnosis:
        if branch == "healthy" and focus is not None and _state(focus):
            branch = "unexplained"
        return Diagnosis(branch, steps, focus, probe, worst_state_summary(records, focus))

    f = focus or {}
    bound, observed = _s(f, "q_bound"), ""
    if not bound:  # no declared range: the bound of the rewards the critic trained on
        bound = observed_bound(records, probes)
        observed = " (of the rewards the critic trained on: no declared reward range)"

    # 1. logging / calculation
    s = Step("published numbers differ from what the learner computed "
             "(logging / calculation error)?")
    compared, bad = (published_mismatches(run_dir, records)
                     if os.path.isfile(os.path.join(run_dir, "metrics.jsonl")) else (0, []))
    if compared:
        s.evidence.append(f"{compared} TensorBoard values of learner statistics against "
                          f"metrics.jsonl: {len(bad)} differ (tolerance {PUBLISHED_REL_TOL:g} "
                          f"relative; {WHY_PUBLISHED})")
        s.evidence.extend(bad[:3])
        s.fired = bool(bad)
    else:
        s.evidence.append("not measurable: no TensorBoard values next to metrics.jsonl "
                          "(monitoring.tensorboard off, or only one of them kept)")
    steps.append(s)
    if s.fired:
        return finish("logging")

    # 2. observations the env returned NaN/inf in
    s = Step("NaN/inf in the observations the env returned (chunks dropped before the replay)?")
    dropped = nonfinite_dropped(records)
    s.evidence.append(f"chunks dropped for NaN/inf: {dropped.get('obs', 0):g} for an observation, "
                      f"{dropped.get('reward', 0):g} for a reward ({WHY_NONFINITE_DROP})")
    if dropped.get(NONFINITE_UNTOLD):
        s.evidence.append(f"{dropped[NONFINITE_UNTOLD]:g} more for an observation or a reward: "
                          "recorded before the two were counted apart (read the env's both)")
    s.fired = dropped.get("obs", 0) > 0
    steps.append(s)
    if s.fired:
        return finish("observation")

    # 3. rewards beyond their declared range, not finite, or dominating
    s = Step("a reward beyond its declared range (a component, or the critic's rewards: scaled "
             "or summed along episodes), not finite, or one component dominating?")
    means = [r for r in records if any(k.startswith("reward_components/") for k in r)]
    last = means[-1] if means else {}
    for comp, (lo, hi) in declared_component_ranges(env).items():
        v = last.get(f"reward_components/{comp}")
        if v is not None and not lo - 1e-6 <= v <= hi + 1e-6:
            s.fired = True
            s.evidence.append(f"{comp} mean {v:.4g} outside its declared [{lo:.4g}, {hi:.4g}] "
                              f"({WHY_COMPONENT})")
    shares = {k.split("/", 1)[1]: v for k, v in last.items() if k.startswith("reward_share/")}
    if shares:
        top = max(shares, key=shares.get)
        s.evidence.append(f"largest share: {top} {shares[top]:.2f} (dominating above "
                          f"{DOMINANT_SHARE}: {WHY_DOMINANT})")
        s.fired |= shares[top] > DOMINANT_SHARE
    elif last:
        s.evidence.append(f"no component shares at {_at(last)}: the components' magnitude was "
                          "rounding noise against the declared reward scale (nothing dominates "
                          "a reward of ~0)")
    rewards = _first_found(probes, "reward_pipeline", ("scale", "accumulation"))
    if rewards:
        s.evidence.append(f"{rewards_measured(rewards)} at env step {rewards.get('env_steps')} "
                          f"vs {rewards_threshold(rewards)} ({WHY_REWARDS})")
        s.fired |= rewards["reward_pipeline"] != "ok"
    else:
        s.evidence.append("the critic's rewards not measured: no declared reward range "
                          "(training.reward_range) or no probe")
    nan = next((p for p in probes if p.get("probe_nonfinite_rewards")), None)
    if nan is not None:
        s.fired = True
        s.evidence.append(f"the env returned {nan['probe_nonfinite_rewards']} NaN/inf rewards in "
                          f"the probe's {nan['probe_steps']} rollout steps at env step "
                          f"{nan.get('env_steps')} ({WHY_NONFINITE_REWARD})")
    if dropped.get("reward", 0) > 0:
        s.fired = True
        s.evidence.append(f"training dropped {dropped['reward']:g} chunks for a NaN/inf reward "
                          f"({WHY_NONFINITE_REWARD})")
    steps.append(s)
    if s.fired:
        return finish("reward_scaling")

    # 4. the Bellman update itself
    s = Step("the Bellman update wrong: targets on terminal transitions other than the reward "
             "alone (checked in the learner)?")
    t_max, t_min = _s(f, "q_target_max"), _s(f, "q_target_min")
    if bound and t_max is not None and t_min is not None:
        t_ratio, way = _ends(t_min, t_max, bound)
        s.evidence.append(f"q_target in [{t_min:.4g}, {t_max:.4g}], {t_ratio:.3g} x bound "
                          f"{bound:.4g}{way} (evidence only: a diverging critic drags its "
                          "targets along)")
    masking = _first_found(probes, "terminal_masking", ("unmasked",))
    if masking.get("terminal_masking") in ("ok", "unmasked"):
        s.evidence.append(f"{terminal_measured(masking)} at env step {masking.get('env_steps')}, "
                          f"threshold {TERMINAL_THRESHOLD} ({WHY_TERMINAL}) "
                          f"-> {masking['terminal_masking']}")
        s.fired = masking["terminal_masking"] == "unmasked"
    else:
        s.evidence.append("terminal masking not measured: " + masking.get(
            "terminal_masking_unmeasured", "no probe"))
    steps.append(s)
    if s.fired:
        return finish("bootstrap")

    # 5. critic overestimation / divergence
    s = Step("Q beyond the bound with sane rewards and a correct update, or an overestimation "
             "bias that keeps growing (critic overestimation / unstable TD)?")
    for name in ("q_actor", "q_target"):
        hi, lo = _s(f, f"{name}_max"), _s(f, f"{name}_min")
        if bound and hi is not None and lo is not None:
            ratio, way = _ends(lo, hi, bound)
            s.evidence.append(f"{name} in [{lo:.4g}, {hi:.4g}], {ratio:.3g} x bound {bound:.4g}"
                              f"{way}")
            s.fired |= not ratio <= 1.0
    s.evidence.append(f"threshold: |Q| <= q_bound{observed} on both ends ({WHY_BOUND})"
                      if bound else
                      "Q bound not measured: no declared reward range (training.reward_range)")
    beyond = worst_excursion(records, health, gamma)
    if beyond is not None:
        s.fired = True
        s.evidence.append(f"{beyond[0]} at {_at(beyond[1])}; threshold "
                          f"{interval_threshold(health)} ({WHY_INTERVAL})")
    passed, measured, threshold, why = judge_overestimation(probes,
                                                           health.preflight_overestimation_max)
    s.evidence.append(f"overestimation: {measured}; threshold {threshold} ({why})")
    s.fired |= passed is False
    grad = _s(f, "grad_norm_critic")
    if grad is not None:
        s.evidence.append(f"critic grad norm {grad:.4g}")
    steps.append(s)
    if s.fired:
        return finish("overestimation")
    return finish("healthy")
