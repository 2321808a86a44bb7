"""Training results shaped like TD3's, without training: for exercising the
monitoring stack (exporter, Prometheus rules, Alertmanager routes, dashboards)
end to end in tests, the alert-latency benchmark and dashboard demos.

Rewards are bounded by [-50, 200] per step with gamma 0.99 (q_bound 20000),
the incident's scale, and a ``SyntheticRun`` is judged with the driving
preset, as the driving task is. A diverging series leaves the bound at
``diverge_from`` and keeps growing, as the incident's critic did.
"""

from __future__ import annotations

import threading
from typing import Dict, Optional

from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_av.health.health_monitor import HealthMonitor
from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.q_bound import q_bound
from rllib_av.monitoring.exporter import HealthExporter

Q_BOUND = q_bound(-50.0, 200.0, 0.99)
STEPS_PER_ITER = 200
UPDATES_PER_ITER = 200


def synthetic_result(iteration: int, diverge_from: Optional[int] = None,
                     with_components: bool = True) -> Dict:
    i = iteration
    q_max = 800.0 + 5.0 * i
    if diverge_from is not None and i >= diverge_from:
        q_max = Q_BOUND * 3.0 * (i - diverge_from + 1)
    q_mean = 0.4 * q_max
    learner = dict(
        q_actor_mean=q_mean, q_actor_max=q_max, q_actor_min=-30.0, q_actor_std=0.1 * q_max,
        q_target_mean=q_mean * 0.98, q_target_max=q_max * 0.97, q_target_min=-35.0,
        q1_mean=q_mean * 0.99, q2_mean=q_mean * 0.985, critic_loss=5.0 + 0.01 * q_mean,
        actor_loss=-q_mean, grad_norm_actor=2.0, grad_norm_critic=30.0,
        td_error_abs_mean=1.5, q_bound=Q_BOUND, q_bound_ratio=q_max / Q_BOUND,
        policy_lag_mean=24.0, policy_lag_max=64.0,
        num_updates_lifetime=float(UPDATES_PER_ITER * i), nonfinite_loss=0.0, nonfinite_grads=0.0,
    )
    runners = dict(episode_return_mean=120.0 + i, episode_len_mean=180.0,
                   num_env_steps_sampled=float(STEPS_PER_ITER),
                   num_env_steps_sampled_lifetime=float(STEPS_PER_ITER * (i + 1)),
                   num_episodes_lifetime=float(i + 1))
    if with_components:
        comps = dict(efficiency=0.6, lane_keeping=0.3, comfort=-0.05, safety=-0.02, progress=0.4)
        runners["reward_components"] = dict(comps, total=sum(comps.values()))
        runners["reward_components_abs"] = {c: abs(v) for c, v in comps.items()}
    return {
        "training_iteration": i + 1,
        "learners": {DEFAULT_MODULE_ID: learner,
                     "__all_modules__": {"num_trainable_parameters": 1.0}},
        "env_runners": runners,
        "fault_tolerance": {"num_healthy_workers": 2, "num_remote_worker_restarts": 0},
        "nonfinite": {"obs": 0.0, "reward": 0.0},
    }


class SyntheticRun:
    """A real HealthExporter on an ephemeral loopback port, fed one synthetic
    result every ``period`` seconds by a thread, judged by the same health
    monitor the training callback uses. ``diverge()`` makes Q leave the bound
    from the next result on."""

    def __init__(self, run: str, period: float = 0.5, diverge_from: Optional[int] = None):
        self.exporter = HealthExporter(run, "127.0.0.1", 0, config="synthetic")
        self.target = f"127.0.0.1:{self.exporter.port}"
        self.period, self.diverge_from, self.iteration = period, diverge_from, 0
        self._health = HealthMonitor(HealthSettings(preset="driving"), num_env_runners=2)
        self._stop = threading.Event()
        self.step()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def step(self) -> None:
        result = synthetic_result(self.iteration, self.diverge_from)
        self.exporter.publish(self._health.judge(result))
        self.iteration += 1

    def diverge(self) -> None:
        self.diverge_from = self.iteration

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.step()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.exporter.close()
