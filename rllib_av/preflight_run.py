"""`rllib-av preflight`: the short diagnostic run behind the GO / NO-GO gate.

Trains ``--steps`` env steps as the run config says, but with the guard off
(the gate judges the run as it is) and ``health.preflight_probes`` critic
probes spread evenly over its learning part (the last at its end: the overestimation
trend needs several), then judges the run with the table in
rllib_av/health/preflight.py.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

from rllib_av.health.preflight import Check, evaluate, is_go, read_records
from rllib_av.health.probes import read_probes
from rllib_av.run_config import RunConfig
from rllib_av.training import train


def preflight(rc: RunConfig, steps: Optional[int] = None,
              verbose: bool = False) -> Tuple[bool, List[Check], str]:
    """Run the diagnostic training; returns (go, checks, run_dir)."""
    rc = dataclasses.replace(
        rc,
        run=dataclasses.replace(rc.run, name=f"{rc.run.name}-preflight",
                                total_env_steps=steps or rc.health.preflight_steps),
        health=dataclasses.replace(rc.health, guard_action="off", probe_every_iters=0))
    # Evenly over the part of the run that learns.
    start, total = rc.training.learning_starts, rc.run.total_env_steps
    n = rc.health.preflight_probes
    run_dir = train(rc, verbose=verbose, probe_at_steps=[start + (total - start) * k // n
                                                         for k in range(1, n)])
    checks = evaluate(read_records(run_dir), read_probes(run_dir), rc.health,
                      rc.training.learning_starts, rc.training.gamma)
    return is_go(checks), checks, run_dir
