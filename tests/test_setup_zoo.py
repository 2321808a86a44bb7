"""The gate, the verdict and the diagnosis on the set-up zoo (tests/setup_zoo.py,
and the blind set-ups of tests/setup_zoo_blind.py): healthy set-ups unlike the
driving task and genuinely broken ones, none of them a switch in the product.
Each runs the real preflight (a short TD3 run with its critic probes), then
`diagnose` on its run directory; each must get
its expected verdict (the worst divergence_state the run reached), preflight
result (and the rows that catch it) and diagnose branch. The suite prints the
confusion table at the end (conftest.py).

ZOO_STEPS=default runs every set-up for health.preflight_steps instead of its
CI-sized ``steps`` (ZOO_STEPS=N: N env steps)."""

import json
import os

import pytest

from rllib_av.health.diagnosis import diagnose
from rllib_av.health.health_monitor import HEALTH_REASONS_KEY
from rllib_av.health.probes import read_probes
from rllib_av.preflight_run import preflight
from rllib_av.run_config import load_run_config

from setup_zoo import RESULTS, ROOT, SETUPS, Outcome
from setup_zoo_blind import BLIND_SETUPS

pytestmark = pytest.mark.slow
CUSTOM_ENV_DIR = os.path.join(ROOT, "configs", "custom_env")
STEPS = os.environ.get("ZOO_STEPS")


ZOO = SETUPS + BLIND_SETUPS


@pytest.mark.parametrize("setup", ZOO, ids=[s.name for s in ZOO])
def test_gate_verdict_and_diagnosis_are_right(ray_local, tmp_path, monkeypatch, setup):
    monkeypatch.syspath_prepend(CUSTOM_ENV_DIR)  # configs/custom_env.yaml's env module
    rc = load_run_config(setup.config, setup.overrides + [
        f"run.output_dir={tmp_path}", "run.min_time_s_per_iteration=0",
        "monitoring.exporter_port=0", "monitoring.tensorboard=false"])
    steps = setup.steps if STEPS is None else None if STEPS == "default" else int(STEPS)
    go, checks, run_dir = preflight(rc, steps)
    records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    worst = max(r.get("divergence_state", 0) for r in records)
    d = diagnose(run_dir)
    RESULTS.append(Outcome(setup, go, worst, d.branch,
                           [c.name for c in checks if c.passed is False and c.required]))
    table = "\n".join(f"{c.name}: {c.measured} | {c.threshold} | {c.passed}" for c in checks)
    assert go is setup.healthy, table
    assert (worst == 0) is setup.healthy, [r.get("divergence_state", 0) for r in records]
    assert d.branch == setup.branch, d.format()
    rows = {c.name: c for c in checks}
    for name in setup.catches:
        assert rows[name].passed is False and rows[name].required, table
    assert all(c.why for c in checks)
    # Every set-up's probes scored states, the long horizon's (gamma 0.999, 200-step
    # episodes: no state has its discounted tail inside an episode) included; only
    # an env returning NaN/inf rewards leaves them no return to score.
    nan_rewards = any(p.get("probe_nonfinite_rewards") for p in read_probes(run_dir))
    assert rows["overestimation"].passed is not None or nan_rewards, rows["overestimation"].measured
    if not setup.healthy:  # why it was not healthy is kept, and diagnose prints it
        reasons = [r[HEALTH_REASONS_KEY] for r in records if r.get("divergence_state")]
        assert reasons and all(reasons), records[-1]
        assert "  verdict: " in d.format()
