"""`rllib-av preflight`: the short diagnostic run behind the GO / NO-GO gate.

Trains ``--steps`` env steps as the run config says, but with the guard off
(the gate judges the run as it is) and one probe at the end, then judges the
run with the table in rllib_av/health/preflight.py.
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
    run_dir = train(rc, verbose=verbose)
    probes = read_probes(run_dir)
    checks = evaluate(read_records(run_dir), probes[-1] if probes else {}, rc.health,
                      rc.training.learning_starts)
    return is_go(checks), checks, run_dir
