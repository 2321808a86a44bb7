"""The Prometheus exporter: DESIGN.md's health metrics on HTTP /metrics.

One exporter per training driver serves the whole cluster: EnvRunner metrics
arrive already merged in the driver's result dict. It owns its registry (no
process-global state), binds 127.0.0.1 unless told otherwise, and port 0 picks
a free port (``exporter.port`` tells which).

The registry lives in the driver, HTTP does not: each public method renders
the page once and hands it to a server process (metrics_server.py), so a
scrape never runs in the driver nor takes its GIL. An address that cannot be
bound raises MetricsServerError naming host:port.
"""

from __future__ import annotations

from typing import Dict, Mapping, Tuple

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Gauge, generate_latest,
)

from rllib_av.monitoring.iteration_metrics import (
    NONFINITE_WHERE, REWARD_COMPONENTS, IterationMetrics,
)
from rllib_av.monitoring.metrics_server import MetricsServer

PREFIX = "rllib_av_"
# Learner stats exported as gauges of the same name, labels (run, module).
LEARNER_GAUGES = (
    "q_actor_mean", "q_actor_max", "q_actor_min", "q_actor_std",
    "q_target_mean", "q_target_max", "q_target_min", "q1_mean", "q2_mean",
    "q_bound", "q_bound_ratio", "critic_loss", "actor_loss", "td_error_abs_mean",
)
GRAD_NORM_NETWORKS = ("actor", "critic")
# What the divergence guard can do (rllib_av/health/guard.py).
GUARD_ACTIONS = ("alert", "stop", "rollback")


class HealthExporter:
    def __init__(self, run: str, host: str = "127.0.0.1", port: int = 9464):
        self.run = run
        self.registry = r = CollectorRegistry()
        rm = ["run", "module"]
        self._learner = {n: Gauge(PREFIX + n, _HELP.get(n, n.replace("_", " ")), rm, registry=r)
                         for n in LEARNER_GAUGES}
        self._grad_norm = Gauge(PREFIX + "grad_norm", "Pre-clip global gradient norm per optimizer",
                                rm + ["network"], registry=r)
        self._divergence = Gauge(PREFIX + "divergence_state",
                                 "0 healthy, 1 warning, 2 diverged", rm, registry=r)
        self._updates = Counter(PREFIX + "learner_updates", "Gradient updates", rm, registry=r)
        self._reward_mean = Gauge(PREFIX + "reward_component_mean",
                                  "Per-step reward component mean over the last iteration",
                                  ["run", "component"], registry=r)
        self._reward_share = Gauge(PREFIX + "reward_component_share",
                                   "mean |component| / sum of mean |components|",
                                   ["run", "component"], registry=r)
        g = lambda name, doc: Gauge(PREFIX + name, doc, ["run"], registry=r)  # noqa: E731
        c = lambda name, doc: Counter(PREFIX + name, doc, ["run"], registry=r)  # noqa: E731
        self._episode_return = g("episode_return_mean", "Mean episode return")
        self._episode_length = g("episode_length_mean", "Mean episode length in env steps")
        self._healthy = g("env_runners_healthy", "EnvRunners sampling (1 when sampling locally)")
        self._desired = g("env_runners_desired", "EnvRunners the run was configured with")
        self._env_steps = c("env_steps", "Env steps sampled")
        self._runner_restarts = c("env_runner_restarts", "EnvRunner actor restarts")
        self._sim_restarts = c("sim_server_restarts", "Simulator server restarts")
        self._nonfinite = Counter(PREFIX + "nonfinite", "NaN/inf values seen",
                                  ["run", "where"], registry=r)
        # Counters exist from the first scrape, so increase() and absence checks work.
        for ctr in (self._env_steps, self._runner_restarts, self._sim_restarts):
            ctr.labels(run)
        for where in NONFINITE_WHERE:
            self._nonfinite.labels(run, where)
        self._guard_actions = Counter(PREFIX + "guard_actions", "Divergence guard actions taken",
                                      ["run", "action"], registry=r)
        for action in GUARD_ACTIONS:
            self._guard_actions.labels(run, action)
        self._overestimation = Gauge(
            PREFIX + "overestimation_bias",
            "Q1(s, mu(s)) minus the discounted Monte-Carlo return on evaluation rollouts",
            rm, registry=r)
        self._last: Dict[Tuple, float] = {}

        # One rendering for every scraper: the classic text format, which
        # Prometheus reads whatever format it asked for first.
        self._server = MetricsServer(host, port, generate_latest(r), CONTENT_TYPE_PLAIN_0_0_4)
        self.host, self.port = host, self._server.port

    def _publish(self) -> None:
        self._server.publish(generate_latest(self.registry))

    def _advance(self, counter, labels: Tuple[str, ...], lifetime: float) -> float:
        """Counters from RLlib's lifetime totals: add what is new since last time."""
        key = (counter, labels)
        delta = max(lifetime - self._last.get(key, 0.0), 0.0)
        if delta > 0:
            counter.labels(*labels).inc(delta)
        self._last[key] = max(lifetime, self._last.get(key, 0.0))
        return delta

    def set_divergence(self, states: Mapping[str, int]) -> None:
        for mid, state in states.items():
            self._divergence.labels(self.run, mid).set(int(state))
        self._publish()

    def count_guard_action(self, action: str) -> None:
        self._guard_actions.labels(self.run, action).inc()
        self._publish()

    def set_overestimation_bias(self, module: str, bias: float) -> None:
        self._overestimation.labels(self.run, module).set(bias)
        self._publish()

    def update(self, m: IterationMetrics) -> float:
        """Export one iteration; returns how many NaN/inf values are new."""
        run = self.run
        for mid, stats in m.modules.items():
            for name, gauge in self._learner.items():
                if name in stats:
                    gauge.labels(run, mid).set(stats[name])
            for net in GRAD_NORM_NETWORKS:
                if f"grad_norm_{net}" in stats:
                    self._grad_norm.labels(run, mid, net).set(stats[f"grad_norm_{net}"])
            if "num_updates_lifetime" in stats:
                self._advance(self._updates, (run, mid), stats["num_updates_lifetime"])
        for comp, v in m.reward_mean.items():
            self._reward_mean.labels(run, comp).set(v)
        for comp in REWARD_COMPONENTS:
            if comp in m.reward_share:
                self._reward_share.labels(run, comp).set(m.reward_share[comp])
        if m.episode_return_mean is not None:
            self._episode_return.labels(run).set(m.episode_return_mean)
        if m.episode_length_mean is not None:
            self._episode_length.labels(run).set(m.episode_length_mean)
        self._healthy.labels(run).set(m.env_runners_healthy)
        self._desired.labels(run).set(m.env_runners_desired)
        if m.env_steps_lifetime is not None:
            self._advance(self._env_steps, (run,), m.env_steps_lifetime)
        self._advance(self._runner_restarts, (run,), m.env_runner_restarts_lifetime)
        self._advance(self._sim_restarts, (run,), m.sim_server_restarts_lifetime)
        nonfinite_new = sum(self._advance(self._nonfinite, (run, where), n)
                            for where, n in m.nonfinite_lifetime.items())
        self._publish()
        return nonfinite_new

    def close(self) -> None:
        self._server.close()


_HELP = {
    "q_actor_mean": "Q1(s, mu(s)) mean over the training batch (what the actor loss sees)",
    "q_actor_max": "Q1(s, mu(s)) max over the training batch",
    "q_actor_min": "Q1(s, mu(s)) min over the training batch",
    "q_actor_std": "Q1(s, mu(s)) std over the training batch",
    "q_target_mean": "Bellman target y mean",
    "q_target_max": "Bellman target y max",
    "q_target_min": "Bellman target y min",
    "q1_mean": "Q1 on batch actions",
    "q2_mean": "Q2 on batch actions",
    "q_bound": "max(|r_min|, |r_max|) / (1 - gamma) in training reward units",
    "q_bound_ratio": "max(|q_actor_max|, |q_actor_min|, |q_target_max|) / q_bound",
    "critic_loss": "Critic loss",
    "actor_loss": "Actor loss (as last computed)",
    "td_error_abs_mean": "Mean absolute TD error",
}
