"""Driving metrics of recorded episodes, with 95% confidence intervals.

People judge a driving agent by a handful of numbers, not by its return: did
it arrive, how far did it get, did it crash or leave the road, how fast, how
well centred, how smoothly. Each is computed per episode from an
``EpisodeTrace`` (rollouts.py) and summarised over a scenario's episodes as
mean [95% CI]:

- proportions (success): Wilson score interval, sane at 0/n and n/n;
- per-episode means: Student-t interval;
- collisions per km: pooled events over pooled distance (short episodes would
  dominate a mean of per-episode rates), exact Poisson (Garwood) interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
from scipy import stats

# name -> (label, unit), in table order.
METRICS = {
    "success_rate": ("success rate", ""),
    "route_completion": ("route completion", ""),
    "collisions_per_km": ("collisions per km", "1/km"),
    "off_road_events": ("off-road events", "/episode"),
    "avg_speed_kmh": ("average speed", "km/h"),
    "lateral_error_m": ("mean lateral error", "m"),
    "heading_error_deg": ("mean heading error", "deg"),
    "jerk_mean_mps3": ("mean longitudinal jerk", "m/s^3"),
    "jerk_max_mps3": ("max longitudinal jerk", "m/s^3"),
}
CONFIDENCE = 0.95


@dataclass
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> Dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def episode_metrics(trace) -> Dict[str, float]:
    """Per-episode numbers of one ``EpisodeTrace``.

    Speeds include the reset speed, so jerk is the second difference of speed
    over the steps taken: (v[t] - 2 v[t-1] + v[t-2]) / dt^2.
    """
    speed = np.asarray(trace.speed_mps, np.float64)
    dt = trace.step_dt_s
    jerk = np.abs(np.diff(speed, n=2)) / dt**2 if len(speed) >= 3 else np.zeros(0)
    collision = np.asarray(trace.collision, bool)
    off_road = np.asarray(trace.off_road, bool)
    collisions = _rising_edges(collision)
    off_road_events = _rising_edges(off_road)
    steps = speed[1:]  # per step taken (the reset state is not driven)
    return {
        "success": float(trace.goal_reached and collisions == 0 and off_road_events == 0),
        "route_completion": float(trace.route_completion),
        "collisions": float(collisions),
        "distance_km": float(np.sum(steps) * dt / 1000.0),
        "off_road_events": float(off_road_events),
        "avg_speed_kmh": float(np.mean(steps) * 3.6) if len(steps) else 0.0,
        "lateral_error_m": float(np.mean(np.abs(trace.lateral_m[1:]))) if len(steps) else 0.0,
        "heading_error_deg": (float(np.degrees(np.mean(np.abs(trace.heading_rad[1:]))))
                              if len(steps) else 0.0),
        "jerk_mean_mps3": float(np.mean(jerk)) if len(jerk) else 0.0,
        "jerk_max_mps3": float(np.max(jerk)) if len(jerk) else 0.0,
    }


def summarize(per_episode: Sequence[Dict[str, float]]) -> Dict[str, Interval]:
    """The scenario table: every METRICS entry as mean [95% CI]."""
    if not per_episode:
        raise ValueError("no episodes to summarize")
    column = {k: [e[k] for e in per_episode] for k in per_episode[0]}
    out = {"success_rate": wilson_interval(int(sum(column["success"])), len(per_episode)),
           "collisions_per_km": poisson_rate_interval(int(sum(column["collisions"])),
                                                      sum(column["distance_km"]))}
    for key in METRICS:
        if key not in out:  # every metric is >= 0; a completion ratio is <= 1
            out[key] = t_interval(column[key], 0.0, 1.0 if key == "route_completion" else math.inf)
    return {key: out[key] for key in METRICS}


def t_interval(values: Sequence[float], lower: float = -math.inf, upper: float = math.inf,
               confidence: float = CONFIDENCE) -> Interval:
    """Mean with a Student-t interval (zero width for one value or no spread),
    clipped to the metric's possible range [lower, upper]."""
    x = np.asarray(values, np.float64)
    n = len(x)
    mean = float(np.mean(x))
    if n < 2:
        return Interval(mean, mean, mean, n)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * float(np.std(x, ddof=1)) / math.sqrt(n)
    return Interval(mean, max(lower, mean - half), min(upper, mean + half), n)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """Proportion with the Wilson score interval."""
    p = successes / n
    z = stats.norm.ppf(0.5 + confidence / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), n)


def poisson_rate_interval(events: int, exposure: float,
                          confidence: float = CONFIDENCE) -> Interval:
    """Events per unit exposure with the exact (Garwood) Poisson interval.

    No exposure (the car never moved) gives NaN: there is no rate to report.
    """
    if exposure <= 0:
        return Interval(math.nan, math.nan, math.nan, events)
    alpha = 1 - confidence
    low = 0.0 if events == 0 else stats.chi2.ppf(alpha / 2, 2 * events) / 2
    high = stats.chi2.ppf(1 - alpha / 2, 2 * events + 2) / 2
    return Interval(events / exposure, low / exposure, high / exposure, events)


def _rising_edges(flags: np.ndarray) -> int:
    """Events = steps where a flag turns on (a 3-step off-road excursion is one event)."""
    flags = np.asarray(flags, bool)
    return int(np.sum(flags[1:] & ~flags[:-1]) + (flags[0] if len(flags) else 0))


def format_table(summaries: Dict[str, Dict[str, Interval]], title: str = "") -> str:
    """A readable table: one row per metric, one column per policy."""
    names = list(summaries)
    rows: List[List[str]] = [["metric"] + names]
    for key, (label, unit) in METRICS.items():
        cells = [f"{label} ({unit})" if unit else label]
        for name in names:
            iv = summaries[name][key]
            cells.append(_fmt(iv))
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [title] if title else []
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    n = summaries[names[0]]["route_completion"].n
    lines.append(f"mean [95% CI] over {n} episodes")
    return "\n".join(lines)


def _fmt(iv: Interval) -> str:
    if math.isnan(iv.mean):
        return "n/a"
    return f"{iv.mean:.3g} [{iv.low:.3g}, {iv.high:.3g}]"
