"""A run directory's history as the exporter's metrics, in OpenMetrics text for
``promtool tsdb create-blocks-from openmetrics`` to backfill into Prometheus.

metrics.jsonl holds one record per iteration with the numbers the exporter
served at that moment (see ``training._flat_record``); probes.jsonl adds the
overestimation bias, guard.jsonl every guard action, and config.yaml the
thresholds the verdict used (which the alert rules compare against). Each becomes a sample
at the time it was written, under the metric name and labels a live scrape of
the same run carries, so Prometheus queries, alert expressions and Grafana
panels read a finished run as they read a running one.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import yaml

from rllib_av.config_schema import from_dict
from rllib_av.health.divergence import thresholds_in_effect
from rllib_av.health.guard import GUARD_FILE
from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.iteration_metrics import NUM_UPDATES_LIFETIME
from rllib_av.health.probes import PROBES_FILE
from rllib_av.health.statistics import BY_KEY
from rllib_av.monitoring.exporter import GUARD_ACTIONS, PREFIX

Series = Tuple[str, Tuple[Tuple[str, str], ...]]  # (sample name, sorted labels)

# metrics.jsonl keys outside the per-module statistics: key -> (family, type).
_RUN_SERIES = {
    "episode_return_mean": ("episode_return_mean", "gauge"),
    "episode_len_mean": ("episode_length_mean", "gauge"),
    "env_steps": ("env_steps", "counter"),
}
# Prefix of a metrics.jsonl key -> (family, the label its suffix fills, type).
_LABELLED_SERIES = {
    "reward_components/": ("reward_component_mean", "component", "gauge"),
    "reward_share/": ("reward_component_share", "component", "gauge"),
    "nonfinite/": ("nonfinite", "where", "counter"),
}


def read_jsonl(path: str) -> List[Dict]:
    """The records of a JSON-lines file (none if missing; a line cut short by a crash is skipped)."""
    if not os.path.isfile(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


class History:
    """Samples per series, and each family's type, built record by record."""

    def __init__(self, labels: Mapping[str, str]):
        self.labels = dict(labels)
        self.types: Dict[str, str] = {}
        self.samples: Dict[Series, List[Tuple[float, float]]] = defaultdict(list)

    def add(self, family: str, kind: str, value, t: float, **labels: str) -> None:
        if value is None:
            return
        self.types[PREFIX + family] = kind
        name = PREFIX + family + ("_total" if kind == "counter" else "")
        key = (name, tuple(sorted({**self.labels, **labels}.items())))
        self.samples[key].append((t, float(value)))

    @property
    def num_samples(self) -> int:
        return sum(len(v) for v in self.samples.values())

    def openmetrics(self) -> str:
        lines = []
        for family in sorted(self.types):
            lines.append(f"# TYPE {family} {self.types[family]}")
            for (name, labels), points in sorted(self.samples.items()):
                if name.removesuffix("_total") != family:
                    continue
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                last = None
                for t, v in sorted(points):
                    if t != last:  # one sample per timestamp
                        lines.append(f"{name}{{{label_text}}} {_value(v)} {t:.3f}")
                    last = t
        lines.append("# EOF")
        return "\n".join(lines) + "\n"


def run_history(run_dir: str, labels: Mapping[str, str]) -> History:
    """The history of ``run_dir`` under ``labels`` (at least ``run``; also job/instance)."""
    h = History(labels)
    records = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if "time_s" in r]
    time_of = {}
    modules = sorted({k.split("/")[0] for r in records for k in r if k.endswith("/q_bound")})
    thresholds = _thresholds(run_dir)
    for r in records:
        t = r["time_s"]
        time_of[r.get("training_iteration")] = t
        for setting, value in thresholds.items():
            h.add("health_threshold", "gauge", value, t, setting=setting)
        for key, (family, kind) in _RUN_SERIES.items():
            h.add(family, kind, r.get(key), t)
        for key, value in r.items():
            prefix, _, suffix = key.partition("/")
            if prefix + "/" in _LABELLED_SERIES:
                family, label, kind = _LABELLED_SERIES[prefix + "/"]
                h.add(family, kind, value, t, **{label: suffix})
            elif prefix in modules:
                _add_module_stat(h, prefix, suffix, value, t)
        for mid in modules:  # the record keeps the worst module's verdict
            h.add("divergence_state", "gauge", r.get("divergence_state"), t, module=mid)
    for probe in read_jsonl(os.path.join(run_dir, PROBES_FILE)):
        t = time_of.get(probe.get("training_iteration"))
        if t is not None:
            for mid in modules:
                h.add("overestimation_bias", "gauge", probe.get("overestimation_bias"), t,
                      module=mid)
    _add_guard_actions(h, read_jsonl(os.path.join(run_dir, GUARD_FILE)),
                       [r["time_s"] for r in records[:1]])
    return h


def _thresholds(run_dir: str) -> Dict[str, float]:
    """The thresholds the run's verdict used: its config.yaml's health section."""
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    return thresholds_in_effect(from_dict(HealthSettings, data.get("health"), "health"))


def _add_module_stat(h: History, module: str, stat: str, value, t: float) -> None:
    spec = BY_KEY.get(stat)  # the statistics spec names each one's family and labels
    if spec is not None:
        h.add(spec.family, "gauge", value, t, module=module, **dict(spec.labels))
    elif stat == NUM_UPDATES_LIFETIME:
        h.add("learner_updates", "counter", value, t, module=module)


def _add_guard_actions(h: History, entries: Iterable[Dict], start: List[float]) -> None:
    """Counters per action, from 0 at the run's first record (as the exporter starts them)."""
    counts = dict.fromkeys(GUARD_ACTIONS, 0)
    for t in start:
        for action in GUARD_ACTIONS:
            h.add("guard_actions", "counter", 0, t, action=action)
    for e in entries:
        if e.get("action") in counts and e.get("time_s") is not None:
            counts[e["action"]] += 1
            h.add("guard_actions", "counter", counts[e["action"]], e["time_s"], action=e["action"])


def time_span(run_dir: str) -> Optional[Tuple[float, float]]:
    """(first, last) record time of the run, or None before its first iteration."""
    times = [r["time_s"] for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
             if "time_s" in r]
    return (min(times), max(times)) if times else None


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)
