"""The `env.carla:` sub-section (placeholder; the CARLA backend owns this file)."""

from dataclasses import dataclass


@dataclass
class CarlaSettings:
    pass
