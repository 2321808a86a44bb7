"""A simulator that crashes, owned by the tests (never by the product):
``FailingBackend`` wraps a real backend and raises ``SimulatorFailure`` on
every Nth step; the next reset recovers it like a relaunched server (counted in
``server_restarts``). ``FailingDrivingEnv`` is DrivingEnv on such a backend,
registered as ``failing_simulator:FailingDrivingEnv-v0`` (the tests directory
is on sys.path under pytest, and on Ray workers' PYTHONPATH through conftest).
A simulator that hangs is tested against the real watchdog in
test_fault_simulator_hang.py.
"""

from typing import Optional

import gymnasium as gym

from rllib_av.envs.backend import DrivingBackend, SimulatorFailure, Snapshot
from rllib_av.envs.driving_env import DrivingEnv


class FailingBackend(DrivingBackend):
    def __init__(self, backend: DrivingBackend, fail_every_n_steps: int):
        self.backend, self.fail_every_n_steps = backend, fail_every_n_steps
        self.dt = backend.dt
        self._steps_total = 0
        self._failed = False
        self._recoveries = 0

    @property
    def server_restarts(self) -> int:
        return getattr(self.backend, "server_restarts", 0) + self._recoveries

    def reset(self, seed: Optional[int] = None) -> Snapshot:
        if self._failed:
            self._recoveries += 1
            self._failed = False
        return self.backend.reset(seed=seed)

    def step(self, steer: float, throttle_brake: float) -> Snapshot:
        self._steps_total += 1
        if self._steps_total % self.fail_every_n_steps == 0:
            self._failed = True
            raise SimulatorFailure(f"injected crash at step {self._steps_total}")
        return self.backend.step(steer, throttle_brake)

    def render_topdown(self):
        return self.backend.render_topdown()

    def close(self) -> None:
        self.backend.close()


class FailingDrivingEnv(DrivingEnv):
    """DrivingEnv (configured by the ``env:`` keys given as keyword arguments)
    whose simulator crashes every ``fail_every_n_steps`` steps."""

    def __init__(self, fail_every_n_steps: int, render_mode=None, **env_config):
        super().__init__(env_config, render_mode=render_mode)
        self.backend = FailingBackend(self.backend, fail_every_n_steps)


if "FailingDrivingEnv-v0" not in gym.registry:  # imported again: already there
    gym.register("FailingDrivingEnv-v0", entry_point=FailingDrivingEnv)
