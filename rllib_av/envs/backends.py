"""Backend factory: ``env.backend`` -> a ``DrivingBackend`` (imported lazily, so
a highway-only machine never imports ``carla`` and vice versa)."""

from rllib_av.envs.backend import DrivingBackend
from rllib_av.envs.env_settings import EnvSettings


def make_backend(settings: EnvSettings, runner_index: int = 0) -> DrivingBackend:
    """``runner_index``: RLlib's EnvRunner index (each CARLA runner owns its own server/ports)."""
    if settings.backend == "highway":
        from rllib_av.envs.highway_backend import HighwayBackend

        return HighwayBackend(settings)
    if settings.backend == "carla":
        from rllib_av.envs.carla_backend import CarlaBackend

        return CarlaBackend(settings, runner_index=runner_index)
    raise ValueError(f"unknown backend {settings.backend!r}")
