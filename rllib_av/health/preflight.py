"""The preflight GO / NO-GO gate: a short diagnostic run judged by a table.

    rllib-av preflight --config configs/quickstart.yaml [--steps 5000]

rllib_av/preflight_run.py trains ``--steps`` env steps (guard off, critic probes
spread over the run); this module judges the run. Each row says what it
measured, its threshold and why that threshold holds for this env:

- actor_loss: |actor loss| within the Q bound (it is -mean Q); an absolute
  ceiling only where a preset or the config gives one;
- episode_length: not collapsing (the general rule), or in a [min, max] range
  or growing where a preset or the config gives the range;
- q_bound: max |Q| / q_bound over the run; without a declared reward range,
  against the bound of the rewards the critic trained on (q_bound.py); Q also
  within the short ends of the return interval, declared or (without a
  declared range) of every reward stored (the verdict's q_interval rule);
- grad_norm: judged only against a threshold a preset or the config gives;
- reward_range: the rewards the critic trains on inside the declared range;
- terminal_masking: the learner's Bellman targets on terminal transitions are
  the rewards alone (critic_probes.py checks it in the learner);
- nonfinite: NaN/inf (from the env, or the learner's losses and gradients)
  not new in as many consecutive iterations as the verdict calls diverged;
- overestimation: the probes' bias trend (health/overestimation.py).

A row that cannot measure says so and counts as neither pass nor fail. GO when
no row named in ``health.preflight_required`` fails.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_av.health.divergence import (
    TERMINAL_THRESHOLD, WHY_BOUND, WHY_INTERVAL, WHY_NONFINITE, WHY_REWARDS, WHY_TERMINAL,
    NonfiniteStreak, interval_threshold, nonfinite_stats, rewards_measured, rewards_threshold,
    terminal_measured,
)
from rllib_av.health.health_monitor import LifetimeCounts
from rllib_av.health.overestimation import judge_overestimation
from rllib_av.health.q_bound import (
    interval_excursion, largest_q, observed_q_bound, q_bound_ratio, q_span,
)
from rllib_av.health.tensorboard_records import read_tensorboard_records

GROWTH = 1.25  # "growing": mean length over the last third >= this x the first third
# "Collapsing": the last third's mean length under this fraction of the
# longest earlier third's, while the return did not improve.
COLLAPSE = 0.5

WHY_ACTOR_LOSS = "the actor loss is -mean Q1(s, mu(s)), so no correct critic puts it past the bound"
WHY_COLLAPSE = ("episodes that end sooner while their return drops are a policy getting worse, "
                "whatever the env's length scale; shorter episodes with a rising return are a "
                "task finished sooner")
WHY_NO_GRAD_SCALE = ("a gradient norm has no env-independent scale (it follows the reward scale "
                     "and the network): reported, judged only against health.preflight_grad_norm_max "
                     "or a preset")


@dataclass
class Check:
    name: str
    measured: str
    threshold: str
    passed: Optional[bool]  # None: not measurable in this run (not counted against GO)
    why: str = ""
    required: bool = False


def read_records(run_dir: str) -> List[Dict]:
    """The run's per-iteration records: metrics.jsonl, else its TensorBoard events."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return read_tensorboard_records(run_dir)
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _stat(record: Dict, key: str) -> Optional[float]:
    v = record.get(f"{DEFAULT_MODULE_ID}/{key}")
    return None if v is None else float(v)


def module_stats(record: Dict) -> Dict[str, float]:
    """The learner statistics of one record, by their statistics.py keys."""
    return {k.split("/", 1)[1]: v for k, v in record.items()
            if k.startswith(f"{DEFAULT_MODULE_ID}/") and v is not None}


def observed_bound(records: List[Dict], probes: List[Dict]) -> Optional[float]:
    """Without a declared range: q_bound.observed_q_bound of the largest rewards
    any probe found in the replay and the critic's largest |Q| in its first
    iteration."""
    seen = [p["q_bound_observed"] for p in probes if p.get("q_bound_observed") is not None]
    start = next((abs(top[1]) for top in map(largest_q, map(module_stats, records))
                  if top is not None), 0.0)
    return observed_q_bound(max(seen) if seen else None, start)


def _worst(records: List[Dict], key: str, magnitude=abs) -> Optional[Tuple[float, Dict]]:
    """(value, record) where ``magnitude(value)`` peaked; NaN counts as the worst."""
    found = [(_stat(r, key), r) for r in records if _stat(r, key) is not None]
    if not found:
        return None
    return max(found, key=lambda x: math.inf if math.isnan(x[0]) else magnitude(x[0]))


def _thirds(values: List[float]) -> Tuple[float, float, float]:
    third = max(len(values) // 3, 1)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return mean(values[:third]), mean(values[third:-third] or values[:third]), mean(values[-third:])


def actor_loss_check(records: List[Dict], h) -> Check:
    worst = _worst(records, "actor_loss")
    if worst is None:
        return Check("actor_loss", "no actor update", "-", None, WHY_ACTOR_LOSS)
    loss, at = worst
    bound = _stat(at, "q_bound")
    limits, whys = [], []
    if bound:
        limits.append((bound * h.preflight_q_bound_ratio_max,
                       f"<= {h.preflight_q_bound_ratio_max:g}x q_bound {bound:.4g}"))
        whys.append(WHY_ACTOR_LOSS)
    if h.preflight_actor_loss_abs_max is not None:
        limits.append((h.preflight_actor_loss_abs_max, f"< {h.preflight_actor_loss_abs_max:.4g}"))
        whys.append(h.source("preflight_actor_loss_abs_max"))
    measured = f"max |{loss:.4g}| (env step {at.get('env_steps')})"
    if not limits:
        return Check("actor_loss", measured, "-", None,
                     "not measured: no Q bound (declare training.reward_range) and no "
                     "health.preflight_actor_loss_abs_max")
    passed = math.isfinite(loss) and all(abs(loss) <= limit for limit, _ in limits)
    return Check("actor_loss", measured, " and ".join(t for _, t in limits), passed,
                 "; ".join(whys))


def episode_length_check(records: List[Dict], h, learning_starts: int) -> Check:
    after = [r for r in records if r.get("episode_len_mean") is not None
             and r["env_steps"] > learning_starts]
    lengths = [r["episode_len_mean"] for r in after]
    lo, hi = h.preflight_episode_len_min, h.preflight_episode_len_max
    if lo is not None or hi is not None:
        lo, hi = lo or 0.0, math.inf if hi is None else hi
        threshold = f"in [{lo:g}, {hi:g}] or growing x{GROWTH}"
        why = "; ".join(sorted({h.source(k) for k in ("preflight_episode_len_min",
                                                      "preflight_episode_len_max")
                                if getattr(h, k) is not None}))
        if not lengths:
            return Check("episode_length", "not measured: no episode ended after learning "
                         "started", threshold, None, why)
        first, _, last = _thirds(lengths)
        growing = len(lengths) >= 3 and last >= GROWTH * first
        return Check("episode_length", f"final {lengths[-1]:.1f} (mean {first:.1f} -> {last:.1f})",
                     threshold, lo <= lengths[-1] <= hi or growing, why)
    threshold = f"last third >= {COLLAPSE:g}x the longest earlier third, or the return rising"
    if len(lengths) < 3:
        return Check("episode_length", f"not measured: {len(lengths)} iterations with ended "
                     "episodes after learning started (3 needed)", threshold, None, WHY_COLLAPSE)
    first, middle, last = _thirds(lengths)
    returns = [r.get("episode_return_mean") for r in after]
    rising = None not in returns and _thirds(returns)[2] > _thirds(returns)[0]
    measured = f"mean length {first:.1f} -> {middle:.1f} -> {last:.1f}"
    if None not in returns:
        r_first, _, r_last = _thirds(returns)
        measured += f", return {r_first:.4g} -> {r_last:.4g}"
    return Check("episode_length", measured, threshold,
                 last >= COLLAPSE * max(first, middle) or rising, WHY_COLLAPSE)


def worst_excursion(records: List[Dict], h, gamma: Optional[float]):
    """(excursion, record) farthest past a short end of the return interval
    over the run (q_bound.interval_excursion), or None."""
    if gamma is None:
        return None
    start = next(filter(None, (q_span(module_stats(r)) for r in records)), None)
    found = [(e, r) for e, r in ((interval_excursion(module_stats(r), gamma,
                                                     h.q_interval_slack, start), r)
                                 for r in records)
             if e is not None]
    return max(found, key=lambda x: x[0].excess) if found else None


def q_bound_check(records: List[Dict], probes: List[Dict], h,
                  gamma: Optional[float] = None) -> Check:
    row = bound_ratio_check(records, probes, h)
    beyond = worst_excursion(records, h, gamma)
    if beyond is None:
        return row
    excursion, at = beyond
    return Check("q_bound", f"{row.measured}; {excursion} at step {at['env_steps']}",
                 f"{row.threshold} and {interval_threshold(h)}", False,
                 f"{row.why}; {WHY_INTERVAL}")


def bound_ratio_check(records: List[Dict], probes: List[Dict], h) -> Check:
    worst, source = _worst(records, "q_bound_ratio"), ""
    bound = observed_bound(records, probes) if worst is None else None
    if bound is not None:  # no declared range: the rewards the critic trained on
        ratios = [(q_bound_ratio(module_stats(r), bound), r) for r in records]
        ratios = [(x, r) for x, r in ratios if x is not None]
        if ratios:
            worst = max(ratios, key=lambda x: math.inf if math.isnan(x[0]) else x[0])
            source = "of the rewards the critic trained on; no declared range, "
    if worst is None:
        return Check("q_bound", "not measured: no declared reward range (training.reward_range) "
                     "or no update", "-", None, WHY_BOUND)
    ratio, at = worst
    return Check("q_bound", f"max |Q|/bound {ratio:.3g} (bound {bound or _stat(at, 'q_bound'):.4g} "
                            f"{source}step {at['env_steps']})",
                 f"< {h.preflight_q_bound_ratio_max:g}",
                 math.isfinite(ratio) and ratio < h.preflight_q_bound_ratio_max, WHY_BOUND)


def grad_norm_check(records: List[Dict], h) -> Check:
    norms = [w for w in (_worst(records, "grad_norm_actor"), _worst(records, "grad_norm_critic"))
             if w is not None]
    if not norms:
        return Check("grad_norm", "no update", "-", None, WHY_NO_GRAD_SCALE)
    norm, at = max(norms, key=lambda x: math.inf if math.isnan(x[0]) else x[0])
    measured = f"max {norm:.4g} (env step {at.get('env_steps')})"
    limit = h.preflight_grad_norm_max
    if limit is None:
        return Check("grad_norm", measured, "-", None, WHY_NO_GRAD_SCALE)
    return Check("grad_norm", measured, f"< {limit:.4g}", math.isfinite(norm) and norm < limit,
                 h.source("preflight_grad_norm_max"))


def reward_range_check(probe: Dict) -> Check:
    if "reward_pipeline" not in probe:
        return Check("reward_range", "not measured: no declared reward range "
                     "(training.reward_range) or no probe", "-", None, WHY_REWARDS)
    return Check("reward_range", rewards_measured(probe), rewards_threshold(probe),
                 probe["reward_pipeline"] == "ok", WHY_REWARDS)


def terminal_masking_check(probe: Dict) -> Check:
    verdict = probe.get("terminal_masking")
    if verdict in ("ok", "unmasked"):
        return Check("terminal_masking", terminal_measured(probe), TERMINAL_THRESHOLD,
                     verdict == "ok", WHY_TERMINAL)
    return Check("terminal_masking", "not measured: " + probe.get(
        "terminal_masking_unmeasured", "no probe"), TERMINAL_THRESHOLD, None, WHY_TERMINAL)


def nonfinite_check(records: List[Dict], h) -> Check:
    """The verdict's NaN/inf rule over the whole run: an iteration brought some
    when a ``nonfinite/<where>`` counter rose (as the monitor counts it, through
    rollbacks: health_monitor.LifetimeCounts) or a learner statistic that must
    be finite was not; ``h.nonfinite_diverge_iters`` of them in a row is
    diverged there, and NO-GO here."""
    counts, streak, longest, brought, totals = LifetimeCounts(), NonfiniteStreak(), 0, 0, {}
    for r in records:
        counters = {k.split("/", 1)[1]: float(v) for k, v in r.items()
                    if k.startswith("nonfinite/") and v is not None}
        new = counts.advance(int(r["training_iteration"]), counters)
        stats = {k: float(v) for k, v in module_stats(r).items() if isinstance(v, (int, float))}
        bad = sum(new.values()) + len(nonfinite_stats(stats))
        for k, n in new.items():
            totals[k] = totals.get(k, 0.0) + n
        brought += bad > 0
        longest = max(longest, streak.update(bad))
    limit = h.nonfinite_diverge_iters
    where = ", ".join(f"{n:g} in {k}" for k, n in sorted(totals.items()) if n) or "none counted"
    return Check("nonfinite", f"new in {brought} of {len(records)} iterations, at most {longest} "
                 f"in a row ({where})", f"< {limit} iterations in a row (health."
                 "nonfinite_diverge_iters)", longest < limit, WHY_NONFINITE)


def evaluate(records: List[Dict], probes: List[Dict], h, learning_starts: int,
             gamma: Optional[float] = None) -> List[Check]:
    """The table's rows from a run's metrics and its probe records (oldest
    first); ``gamma``, the run's discount, for the return interval's short ends."""
    probe = probes[-1] if probes else {}
    over = judge_overestimation(probes, h.preflight_overestimation_max)
    checks = [actor_loss_check(records, h), episode_length_check(records, h, learning_starts),
              q_bound_check(records, probes, h, gamma), grad_norm_check(records, h),
              reward_range_check(probe), terminal_masking_check(probe), nonfinite_check(records, h),
              Check("overestimation", over[1], over[2], over[0], over[3])]
    for c in checks:
        c.required = c.name in h.preflight_required
    return checks


def is_go(checks: List[Check]) -> bool:
    return all(c.passed is not False for c in checks if c.required)


def format_table(checks: List[Check], go: bool, run_dir: str) -> str:
    rows = [("check", "measured", "threshold", "result")]
    for c in checks:
        result = {True: "PASS", False: "FAIL", None: "n/a"}[c.passed]
        rows.append((c.name + ("" if c.required else " (info)"), c.measured, c.threshold, result))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("\nwhy each threshold holds:")
    lines += [f"  {c.name}: {c.why}" for c in checks]
    lines.append(f"\n{'GO' if go else 'NO-GO'}   (run: {run_dir})")
    return "\n".join(lines)
