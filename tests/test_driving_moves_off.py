"""The quickstart does not learn to stand still at training.actor_preactivation_l2
0.1 (the traffic configs' value; the quickstart ships a lower one).

Seed 0 of the preflight gate's short run at training.actor_preactivation_l2
0.1 stood still while comfort priced jerk per second: its greedy policy held
throttle_brake just below 0 from every reset and each episode ran into the
300-step limit (NO-GO on episode length). Priced per metre
(rllib_av/envs/reward.py), moving off pays at once and the same run is GO.
"""

import pytest

from test_preflight_gate import QUICKSTART, STEPS, cli, short_run


@pytest.mark.slow
def test_seed_0_at_the_strongest_actor_penalty_moves_off(tmp_path):
    sets = short_run(tmp_path) + ["run.seed=0", "training.actor_preactivation_l2=0.1"]
    out = cli("preflight", "--config", QUICKSTART, "--steps", str(STEPS), "--quiet",
              *[a for kv in sets for a in ("--set", kv)])
    row = next(line for line in out.stdout.splitlines() if line.startswith("episode_length"))
    assert row.rstrip().endswith("PASS"), row
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
