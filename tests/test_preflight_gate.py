"""`rllib-av preflight` and `rllib-av diagnose` on real short runs: a healthy
quickstart gets GO and a healthy diagnosis; each deliberately broken set-up
(test-only settings) gets NO-GO, fails the row that catches it, and the tree
takes the matching branch."""

import os
import subprocess
import sys

import pytest

from rllib_av.health.diagnosis import diagnose
from rllib_av.preflight_run import preflight
from rllib_av.run_config import load_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
STEPS = 1500


def short_run(tmp_path):
    # Quickstart episodes end at the goal after ~100 steps once the car drives,
    # so its preflight range is [5, 150]; a car that stands still hits the 200-step limit.
    return [f"run.output_dir={tmp_path}", "run.min_time_s_per_iteration=0",
            "training.learning_starts=200", "training.batch_size=64",
            "training.buffer_size=5000", "monitoring.exporter_port=0",
            "monitoring.tensorboard=false", "health.preflight_episode_len_max=150"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "rllib_av.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


@pytest.mark.slow
def test_healthy_run_is_go_and_diagnosed_healthy(tmp_path):
    sets = [a for kv in short_run(tmp_path) for a in ("--set", kv)]
    out = cli("preflight", "--config", QUICKSTART, "--steps", str(STEPS), *sets)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    lines = out.stdout.splitlines()  # progress lines first (shown by default), then the table
    assert any(line.split() == ["check", "measured", "threshold", "result"] for line in lines)
    for name in ("actor_loss", "episode_length", "q_bound", "reward_range", "terminal_masking"):
        row = next(line for line in lines if line.startswith(name))
        assert row.rstrip().endswith("PASS"), row
    assert "GO" in lines[-1] and "NO-GO" not in lines[-1]
    run_dir = lines[-1].split("(run: ")[1].rstrip(")")

    diag = cli("diagnose", run_dir)
    assert diag.returncode == 0, diag.stderr[-2000:]
    assert "branch: healthy" in diag.stdout
    assert "Q - MC return on" in diag.stdout  # the overestimation probe is part of the walk


@pytest.mark.slow
@pytest.mark.parametrize("setting,failing_row,branch", [
    ("training.debug_reward_mode=running_sum", "reward_range", "bootstrap"),
    ("training.debug_reward_mode=blown_up", "reward_range", "reward_scaling"),
    ("training.critic_lr=3.0", "q_bound", "overestimation"),
    ("training.debug_unmasked_bootstrap=true", "terminal_masking", "bootstrap"),
])
def test_broken_setup_is_no_go_with_matching_branch(ray_local, tmp_path, setting, failing_row,
                                                     branch):
    rc = load_run_config(QUICKSTART, short_run(tmp_path) + [setting])
    go, checks, run_dir = preflight(rc, STEPS)
    rows = {c.name: c for c in checks}
    assert not go, [(c.name, c.measured, c.passed) for c in checks]
    assert rows[failing_row].passed is False and rows[failing_row].required, rows[failing_row]
    d = diagnose(run_dir)
    assert d.branch == branch, d.format()
