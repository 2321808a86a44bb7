"""The `env:` section of a run config."""

from dataclasses import dataclass, field

from rllib_av.config_schema import choices


@dataclass
class EnvSettings:
    # "driving" = DrivingEnv (backend below); anything else is a gymnasium id
    # such as "Pendulum-v1".
    id: str = "driving"
    backend: str = field(default="highway", metadata=choices("highway", "carla"))
