"""NaN in the observations only, told apart from NaN in the rewards: a real
TD3 run on an env whose sensor drops out (tests/broken_envs.py). The dropped
chunks are counted under nonfinite_total{where="obs"}, none under "reward",
and `diagnose` names the observations with their remedy (it used to count
both as where="replay" and answer "unexplained")."""

import json
import os

import pytest

from rllib_av.health.diagnosis import diagnose
from rllib_av.preflight_run import preflight
from rllib_av.run_config import load_run_config

from broken_envs import PENDULUM_REWARD_RANGE

pytestmark = pytest.mark.slow


def test_nan_observations_are_counted_and_diagnosed_as_observations(ray_local, tmp_path):
    rc = load_run_config(None, [
        "env.id=broken_envs:NaNObsPendulum-v0",
        f"training.reward_range=[{PENDULUM_REWARD_RANGE[0]}, {PENDULUM_REWARD_RANGE[1]}]",
        "training.actor_hiddens=[64, 64]", "training.critic_hiddens=[64, 64]",
        "training.learning_starts=200", "training.batch_size=64", "training.buffer_size=5000",
        f"run.output_dir={tmp_path}", "run.min_time_s_per_iteration=0",
        "monitoring.exporter_port=0", "monitoring.tensorboard=false"])
    go, checks, run_dir = preflight(rc, 640)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        last = [json.loads(line) for line in f][-1]
    assert last["nonfinite/obs"] > 0 and last["nonfinite/reward"] == 0, last
    assert "nonfinite/replay" not in last
    rows = {c.name: c for c in checks}
    assert f"{last['nonfinite/obs']:g} in obs" in rows["nonfinite"].measured
    d = diagnose(run_dir)
    text = d.format()
    assert d.branch == "observation", text
    assert "remedy: return a finite observation on every step" in text
    assert f"{last['nonfinite/obs']:g} for an observation, 0 for a reward" in text
