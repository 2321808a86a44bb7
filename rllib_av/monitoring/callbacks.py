"""The one RLlib callback that feeds monitoring.

EnvRunner side: each step's ``info["reward_components"]`` (DrivingEnv) goes
into the EnvRunner's MetricsLogger as per-step means, which RLlib merges across
all EnvRunners into ``result["env_runners"]``.

Driver side: ``on_algorithm_init`` builds the health monitor and starts the
Prometheus exporter and the TensorBoard writer (each if configured);
``on_train_result`` has the health layer judge the result (on every run,
exporter or not), puts the verdict into the result (``result["health"]``) for
whatever acts on it, and fans the iteration's health out to the exporter and
TensorBoard.
"""

from __future__ import annotations

import logging
import os
import socket
import weakref
from typing import Dict, Optional

from ray.rllib.callbacks.callbacks import RLlibCallback

from rllib_av.config_schema import ConfigError, from_dict
from rllib_av.health.health_monitor import HealthMonitor
from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.iteration_metrics import (
    REWARD_ABS_MEAN_KEY, REWARD_EPISODE_SUM_KEY, REWARD_MEAN_KEY, REWARD_SHARE_KEY,
    SIM_SERVER_RESTARTS_KEY,
)
from rllib_av.monitoring.exporter import HealthExporter
from rllib_av.monitoring.metrics_server import MetricsServerError
from rllib_av.monitoring.monitoring_settings import MonitoringSettings
from rllib_av.monitoring.tensorboard_writer import TensorBoardWriter

logger = logging.getLogger(__name__)

PORT_FILE = "exporter_port"


class HealthCallbacks(RLlibCallback):
    exporter: Optional[HealthExporter] = None
    tensorboard: Optional[TensorBoardWriter] = None

    # ---- EnvRunner side -------------------------------------------------
    def on_episode_start(self, *, episode, metrics_logger=None, **kwargs) -> None:
        # A simulator is relaunched in reset: the reset info carries it.
        if metrics_logger is not None:
            _log_sim_restarts(episode.get_infos(-1), metrics_logger)

    def on_episode_step(self, *, episode, metrics_logger=None, **kwargs) -> None:
        if metrics_logger is None:
            return
        infos = episode.get_infos(-1)
        _log_sim_restarts(infos, metrics_logger)
        components = infos.get("reward_components") if isinstance(infos, dict) else None
        # Per-episode sums ride in custom_data, which RLlib carries across chunk cuts.
        sums = episode.custom_data.setdefault(REWARD_EPISODE_SUM_KEY, {})
        for comp, value in (components or {}).items():
            value = float(value)
            metrics_logger.log_value((REWARD_MEAN_KEY, comp), value, reduce="mean")
            metrics_logger.log_value((REWARD_ABS_MEAN_KEY, comp), abs(value), reduce="mean")
            sums[comp] = sums.get(comp, 0.0) + value

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        if metrics_logger is None:
            return
        for comp, total in episode.custom_data.get(REWARD_EPISODE_SUM_KEY, {}).items():
            metrics_logger.log_value((REWARD_EPISODE_SUM_KEY, comp), total, reduce="mean")

    # ---- driver side ----------------------------------------------------
    def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
        rc = getattr(algorithm.config, "run_config", None) or {}
        run = rc.get("run", {})
        mon = from_dict(MonitoringSettings, rc.get("monitoring"), "monitoring")
        self.health = HealthMonitor(from_dict(HealthSettings, rc.get("health"), "health"),
                                    algorithm.config.num_env_runners,
                                    getattr(algorithm.config, "reward_range", None),
                                    algorithm.config.gamma)
        run_dir = run.get("run_dir")
        if mon.exporter:
            self.exporter = start_exporter(mon, run.get("name", "run"), run_dir)
        if run_dir and mon.tensorboard:
            self.tensorboard = TensorBoardWriter(os.path.join(run_dir, "tensorboard"))
        # Algorithm has no stop hook for callbacks: release the port with it.
        weakref.finalize(algorithm, self.close)

    def on_train_result(self, *, algorithm, result: Dict, **kwargs) -> None:
        health = self.health.judge(result)
        result["health"] = health.as_result()
        if result.get("env_runners", {}).get(REWARD_ABS_MEAN_KEY):
            # As judged: none where the components are rounding noise.
            result["env_runners"][REWARD_SHARE_KEY] = health.metrics.reward_share
        if self.exporter is not None:
            self.exporter.publish(health)
        if self.tensorboard is not None:
            self.tensorboard.write(health)

    def close(self) -> None:
        """Stop the exporter and flush TensorBoard (idempotent)."""
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None


def check_exporter_port(mon: MonitoringSettings) -> None:
    """A port asked for explicitly that is taken now: the same one line as
    ``start_exporter``'s, before Ray starts or a run directory exists (the
    exporter checks again when it binds: the port may be taken in between)."""
    if not (mon.exporter and mon.exporter_port):
        return  # the default and 0 fall back to a free port
    try:
        family, _, _, _, address = socket.getaddrinfo(mon.exporter_host, mon.exporter_port,
                                                      type=socket.SOCK_STREAM)[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As the HTTP server binds: a port held by TIME_WAIT sockets only is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as e:
        raise _port_error(mon, f"cannot listen on {mon.exporter_host}:{mon.exporter_port}: "
                               f"{e.strerror or e}") from None


def _port_error(mon: MonitoringSettings, reason) -> ConfigError:
    return ConfigError(f"monitoring.exporter_port: {mon.exporter_port} is not available "
                       f"({reason}); set monitoring.exporter_port=0 for any free port")


def start_exporter(mon: MonitoringSettings, config_name: str,
                   run_dir: Optional[str]) -> HealthExporter:
    """The exporter for one run (labels: run = the run directory's name, config =
    the config's run.name), its port written to RUN_DIR/exporter_port."""
    run = os.path.basename(run_dir) if run_dir else f"{config_name}-{os.getpid()}"
    try:
        exporter = HealthExporter(run, mon.exporter_host, mon.exporter_port, config=config_name)
    except MetricsServerError as e:  # an address asked for explicitly: the user's to fix
        if not mon.exporter_port:  # not even a free port: the host is the problem
            raise ConfigError(f"monitoring.exporter_host: {mon.exporter_host!r} is not allowed "
                              f"({e}); expected an address of this machine") from None
        raise _port_error(mon, e) from None
    if exporter.fallback:
        logger.warning("health exporter: %s", exporter.fallback)
    if run_dir:
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, PORT_FILE), "w") as f:
            f.write(f"{exporter.port}\n")
    logger.info("health exporter on http://%s:%d/metrics", exporter.host, exporter.port)
    return exporter


def _log_sim_restarts(infos, metrics_logger) -> None:
    new = infos.get(SIM_SERVER_RESTARTS_KEY) if isinstance(infos, dict) else None
    if new:
        metrics_logger.log_value(SIM_SERVER_RESTARTS_KEY, int(new), reduce="lifetime_sum")


def health_callbacks(algorithm) -> Optional[HealthCallbacks]:
    """The HealthCallbacks instance of a built algorithm (its exporter, port, close())."""
    cbs = algorithm.callbacks if isinstance(algorithm.callbacks, list) else [algorithm.callbacks]
    return next((cb for cb in cbs if isinstance(cb, HealthCallbacks)), None)
