"""The `monitoring:` section of a run config."""

from dataclasses import dataclass, field
from typing import Optional

from rllib_av.config_schema import bounds

# Where /metrics is served unless a run says otherwise (cluster/prometheus scrapes it).
DEFAULT_EXPORTER_PORT = 9464


@dataclass
class MonitoringSettings:
    # Serve the health metrics to Prometheus. Off, the health verdict, the guard,
    # metrics.jsonl and TensorBoard work all the same.
    exporter: bool = True
    # Prometheus exporter; loopback unless a deployment says otherwise.
    exporter_host: str = "127.0.0.1"
    # null: 9464, or any free port when 9464 is taken (a second run on this
    # machine; it says which, and RUN_DIR/exporter_port holds it);
    # 0: any free port; N: exactly N (a taken port is an error).
    exporter_port: Optional[int] = field(default=None, metadata=bounds(ge=0, le=65535))
    tensorboard: bool = True
