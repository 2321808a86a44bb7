"""The `health:` section of a run config: divergence rules and gate thresholds."""

from dataclasses import dataclass


@dataclass
class HealthSettings:
    pass
