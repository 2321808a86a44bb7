"""The Prometheus exporter: the health of the latest iteration on HTTP /metrics.

One exporter per training driver serves the whole cluster: EnvRunner metrics
arrive already merged in the driver's result dict. Every series carries the
labels ``run`` (the run directory's name, unique per run) and ``config`` (the
run config's ``run.name``).

What is served is a ``Collector`` over the latest ``IterationHealth``
(health_monitor.py), not gauges kept by hand: a learner statistic the latest
iteration did not compute (no gradient update) is absent, never a stale
value; counters are the sums of what each iteration added, so they neither
stall nor jump when a guard rollback puts RLlib's lifetime totals back.
``FAMILIES`` lists every series with its type, labels and HELP; the learner's
come from the statistics spec. docs/metrics.md is generated from it.

The registry lives in the driver, HTTP does not: each change renders the page
once and hands it to a server process (metrics_server.py), so a scrape never
runs in the driver nor takes its GIL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from rllib_av.health.health_monitor import IterationHealth
from rllib_av.health.iteration_metrics import NONFINITE_WHERE, REWARD_COMPONENTS, CounterKey
from rllib_av.health.statistics import families as statistic_families
from rllib_av.health.statistics import family_help
from rllib_av.monitoring.metrics_server import MetricsServer, MetricsServerError
from rllib_av.monitoring.monitoring_settings import DEFAULT_EXPORTER_PORT

logger = logging.getLogger(__name__)

PREFIX = "rllib_av_"
RUN_LABELS = ("run", "config")
# What the divergence guard can do (rllib_av/health/guard.py).
GUARD_ACTIONS = ("alert", "stop", "rollback")


@dataclass(frozen=True)
class Family:
    name: str  # without PREFIX (and without _total for a counter)
    type: str  # gauge | counter | info (served as <name>_info 1, its text in labels)
    help: str
    labels: Tuple[str, ...] = ()  # beyond RUN_LABELS

    @property
    def served_name(self) -> str:
        """The name scrapes show (the text format's suffix for counters and infos)."""
        return PREFIX + self.name + {"counter": "_total", "info": "_info"}.get(self.type, "")


LEARNER_FAMILIES = tuple(
    Family(name, "gauge", family_help(stats), ("module",) + tuple(k for k, _ in stats[0].labels))
    for name, stats in statistic_families().items())

FAMILIES: Tuple[Family, ...] = LEARNER_FAMILIES + (
    Family("divergence_state", "gauge",
           "The health verdict on the latest iteration: 0 healthy, 1 warning, 2 diverged",
           ("module",)),
    Family("health_reason", "info",
           "Why the latest verdict is not healthy: one series per rule that fired, none when "
           "healthy. Labels: state, rule, subject (what went wrong: which statistic, which way), "
           "threshold, why that threshold holds; no numbers, so a series lasts as long as the "
           "situation does (the numbers are the gauges'). Alert annotations quote it",
           ("module", "state", "rule", "subject", "threshold", "why")),
    Family("health_threshold", "gauge",
           "The thresholds the latest verdict was judged by (the run's health settings: "
           "defaults, preset and overrides), one series per setting that is set; the alert "
           "rules compare against these", ("setting",)),
    Family("learner_updates", "counter", "Gradient updates (critic steps) made by the learners",
           ("module",)),
    Family("overestimation_bias", "gauge",
           "Q1(s, mu(s)) minus the discounted Monte-Carlo return, mean over the states of the "
           "latest critic probe's evaluation rollouts, in training reward units", ("module",)),
    Family("reward_component_mean", "gauge",
           "Per-step mean of each weighted reward component over the latest iteration's env "
           "steps (total: their sum)", ("component",)),
    Family("reward_component_share", "gauge",
           "Latest iteration's mean |component| / the sum of the five components' mean "
           "|component|", ("component",)),
    Family("episode_return_mean", "gauge",
           "Mean return of the episodes in RLlib's smoothing window (the last "
           "metrics_num_episodes_for_smoothing episodes to end, default 100)"),
    Family("episode_length_mean", "gauge",
           "Mean length in env steps of the episodes in RLlib's smoothing window"),
    Family("env_runners_healthy", "gauge",
           "EnvRunner actors alive (RLlib fault tolerance); sampling in the driver: 1 if the "
           "latest iteration sampled env steps, else 0"),
    Family("env_runners_desired", "gauge",
           "EnvRunners the run was configured with (1 when sampling in the driver)"),
    Family("env_steps", "counter", "Env steps sampled"),
    Family("env_runner_restarts", "counter", "EnvRunner actor restarts"),
    Family("sim_server_restarts", "counter", "Simulator server restarts"),
    Family("nonfinite", "counter",
           "NaN/inf seen: obs / reward = episode chunks dropped before the replay buffer for a "
           "non-finite observation / reward (a chunk with both counts in both); loss / grads = "
           "learner steps skipped", ("where",)),
    Family("guard_actions", "counter", "Divergence guard actions taken", ("action",)),
)


class HealthExporter:
    """``publish`` an iteration's health, ``count_guard_action``,
    ``set_overestimation_bias``; ``port`` is the one bound, ``fallback`` says
    why it is not the default one (None when it is)."""

    def __init__(self, run: str, host: str = "127.0.0.1", port: Optional[int] = None,
                 config: Optional[str] = None):
        self.run_labels = (run, config or run)
        self.latest: Optional[IterationHealth] = None
        self.overestimation_bias: Dict[str, float] = {}
        # Counters exist from the first scrape, so increase() and absence checks work.
        self.totals: Dict[CounterKey, float] = {
            key: 0.0 for key in [("env_steps", ()), ("env_runner_restarts", ()),
                                 ("sim_server_restarts", ())]
            + [("nonfinite", (("where", w),)) for w in NONFINITE_WHERE]
            + [("guard_actions", (("action", a),)) for a in GUARD_ACTIONS]}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_LatestIterationCollector(self))
        self.host, self.fallback = host, None
        self._server = self._serve(host, port)
        self.port = self._server.port

    def _serve(self, host: str, port: Optional[int]) -> MetricsServer:
        page = generate_latest(self.registry)
        # One rendering for every scraper: the classic text format, which
        # Prometheus reads whatever format it asked for first.
        if port is not None:
            return MetricsServer(host, port, page, CONTENT_TYPE_PLAIN_0_0_4)
        try:
            return MetricsServer(host, DEFAULT_EXPORTER_PORT, page, CONTENT_TYPE_PLAIN_0_0_4)
        except MetricsServerError as e:  # most likely another run on this machine
            server = MetricsServer(host, 0, page, CONTENT_TYPE_PLAIN_0_0_4)
            self.fallback = f"{e}; serving on {host}:{server.port} instead"
            return server

    def _render(self) -> None:
        self._server.publish(generate_latest(self.registry))

    def publish(self, health: IterationHealth) -> None:
        """The latest iteration: its numbers replace the previous ones, what it
        added goes onto the counters."""
        self.latest = health
        for key, n in health.new.items():
            self.totals[key] = self.totals.get(key, 0.0) + n
        self._render()

    def count_guard_action(self, action: str) -> None:
        key = ("guard_actions", (("action", action),))
        self.totals[key] = self.totals.get(key, 0.0) + 1
        self._render()

    def set_overestimation_bias(self, module: str, bias: float) -> None:
        self.overestimation_bias[module] = bias
        self._render()

    def close(self) -> None:
        self._server.close()


class _LatestIterationCollector(Collector):
    def __init__(self, exporter: HealthExporter):
        self.e = exporter

    def collect(self) -> Iterator:
        samples = self._samples()
        for f in FAMILIES:
            if f.type == "info":
                family = InfoMetricFamily(PREFIX + f.name, f.help, labels=RUN_LABELS + f.labels)
                for labels, _ in samples.get(f.name, ()):
                    family.add_metric(self.e.run_labels + labels, {})
            else:
                cls = GaugeMetricFamily if f.type == "gauge" else CounterMetricFamily
                family = cls(PREFIX + f.name, f.help, labels=RUN_LABELS + f.labels)
                for labels, value in samples.get(f.name, ()):
                    family.add_metric(self.e.run_labels + labels, value)
            yield family

    def _samples(self) -> Dict[str, list]:
        out: Dict[str, list] = {}

        def add(name: str, labels: Tuple[str, ...], value) -> None:
            if value is not None:
                out.setdefault(name, []).append((labels, float(value)))

        for (name, labels), total in self.e.totals.items():
            add(name, tuple(v for _, v in labels), total)
        for mid, bias in self.e.overestimation_bias.items():
            add("overestimation_bias", (mid,), bias)
        health = self.e.latest
        if health is None:
            return out
        m = health.metrics
        for mid, stats in m.modules.items():
            for name, members in statistic_families().items():
                for s in members:
                    add(name, (mid,) + tuple(v for _, v in s.labels), stats.get(s.key))
        for mid, state in health.states.items():
            add("divergence_state", (mid,), state)
        for mid, verdict in health.verdicts.items():
            for f in verdict.findings:
                add("health_reason", (mid, f.state.name.lower(), f.rule, f.subject, f.threshold,
                                      f.why), 1)
        for setting, value in health.thresholds.items():
            add("health_threshold", (setting,), value)
        for comp, v in m.reward_mean.items():
            add("reward_component_mean", (comp,), v)
        for comp in REWARD_COMPONENTS:
            add("reward_component_share", (comp,), m.reward_share.get(comp))
        add("episode_return_mean", (), m.episode_return_mean)
        add("episode_length_mean", (), m.episode_length_mean)
        add("env_runners_healthy", (), m.env_runners_healthy)
        add("env_runners_desired", (), m.env_runners_desired)
        return out
