"""configs/custom_env.yaml from the command line, as README shows it: a
module-qualified gymnasium id whose module is on PYTHONPATH, with env.kwargs
reaching gymnasium.make in training and in the critic probes alike."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIME_LIMIT = 40  # env.kwargs.max_episode_steps: gymnasium.make's own argument


@pytest.mark.slow
def test_custom_env_trains_with_its_kwargs(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "configs", "custom_env"))
    sets = [f"run.output_dir={tmp_path}", "run.total_env_steps=400", "run.name=custom",
            "training.learning_starts=100", "training.batch_size=32",
            "run.min_time_s_per_iteration=0", "monitoring.exporter_port=0",
            f"env.kwargs.max_episode_steps={TIME_LIMIT}", "env.kwargs.goal_radius=0.05"]
    out = subprocess.run([sys.executable, "-m", "rllib_av.cli", "train", "--quiet", "--config",
                          "configs/custom_env.yaml", *[a for s in sets for a in ("--set", s)]],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = out.stdout.strip().splitlines()[-1].split("run directory: ")[1]
    records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    lengths = [r["episode_len_mean"] for r in records if r["episode_len_mean"] is not None]
    assert lengths and max(lengths) <= TIME_LIMIT, lengths
    (probe,) = [json.loads(line) for line in open(os.path.join(run_dir, "probes.jsonl"))]
    # The probe's env has the run's time limit, raised so returns are complete.
    assert 0 < probe["overestimation_states"] <= 3 * TIME_LIMIT, probe
    assert probe["reward_pipeline"] == "ok" and probe["q_bound"] == pytest.approx(10.0 / 0.02)
