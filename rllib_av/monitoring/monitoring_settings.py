"""The `monitoring:` section of a run config."""

from dataclasses import dataclass, field

from rllib_av.config_schema import bounds


@dataclass
class MonitoringSettings:
    # Prometheus exporter; loopback unless a deployment says otherwise.
    exporter_host: str = "127.0.0.1"
    exporter_port: int = field(default=9464, metadata=bounds(ge=0, le=65535))
    tensorboard: bool = True
