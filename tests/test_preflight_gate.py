"""`rllib-av preflight` and `rllib-av diagnose` from the command line on a real
short run: a healthy quickstart gets GO (exit 0), a table that says why each
threshold holds, and a healthy diagnosis. The broken set-ups and the other
healthy ones are the set-up zoo's (tests/test_setup_zoo.py)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
STEPS = 1500


def short_run(tmp_path):
    # Quickstart episodes end at the goal after ~180 steps at the 6 m/s target
    # (100 m from rest), earlier off the road, so its preflight range is
    # [5, 250]; a car that stands still hits the 300-step limit.
    return [f"run.output_dir={tmp_path}", "run.min_time_s_per_iteration=0",
            "training.learning_starts=200", "training.batch_size=64",
            "training.buffer_size=5000", "monitoring.exporter_port=0",
            "monitoring.tensorboard=false", "health.preflight_episode_len_max=250"]


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
    for name in ("actor_loss", "episode_length", "q_bound", "reward_range"):
        row = next(line for line in lines if line.startswith(name))
        assert row.rstrip().endswith("PASS"), row
    assert "why each threshold holds:" in lines
    assert any(line.startswith("  episode_length: ") and "the driving preset" in line
               for line in lines)
    assert "GO" in lines[-1] and "NO-GO" not in lines[-1]
    run_dir = lines[-1].split("(run: ")[1].rstrip(")")

    diag = cli("diagnose", run_dir)
    assert diag.returncode == 0, diag.stderr[-2000:]
    assert "branch: healthy" in diag.stdout
    assert "overestimation: Q - return " in diag.stdout  # the probes' trend is part of the walk
