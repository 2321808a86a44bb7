"""The `monitoring:` section of a run config."""

from typing import Optional

from pydantic import Field, StrictBool, StrictInt, StrictStr
from pydantic.dataclasses import dataclass

from rllib_av.config_schema import ConfigSection

# Where /metrics is served unless a run says otherwise (cluster/prometheus scrapes it).
DEFAULT_EXPORTER_PORT = 9464


@dataclass
class MonitoringSettings(ConfigSection):
    exporter: StrictBool = True
    """Serve the health metrics to Prometheus. Off, the health verdict, the guard,
    metrics.jsonl and TensorBoard work all the same."""
    exporter_host: StrictStr = "127.0.0.1"
    """Prometheus exporter; loopback unless a deployment says otherwise."""
    exporter_port: Optional[StrictInt] = Field(None, ge=0, le=65535)
    """null: 9464, or any free port when 9464 is taken (a second run on this machine; it
    says which, and RUN_DIR/exporter_port holds it); 0: any free port; N: exactly N (a
    taken port is an error)."""
    tensorboard: StrictBool = True
