"""`rllib-av train` end to end: run directory, metrics, checkpoints, resume, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rllib_av.checkpoints import complete_checkpoints, latest_checkpoint, read_meta
from rllib_av.run_config import load_run_config
from rllib_av.training import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rllib_av.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("args,needle", [
    (["--config", "no/such.yaml"], "--config: 'no/such.yaml' does not exist"),
    (["--config", QUICKSTART, "--set", "training.gamma=1.5"], "training.gamma: 1.5"),
    (["--config", QUICKSTART, "--set", "training.gama=0.9"], "training.gama: unknown key"),
    (["--config", QUICKSTART, "--set", "env.traffic=rush"], "env.traffic: 'rush'"),
    (["--config", QUICKSTART, "--set", "training.batch_size=ten"], "training.batch_size: 'ten'"),
    (["--resume", "/nonexistent-run"], "--resume: '/nonexistent-run' does not exist"),
])
def test_bad_input_is_one_clear_line_and_exit_2(args, needle, tmp_path):
    out = cli("train", *args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not os.listdir(tmp_path)  # nothing written


@pytest.mark.slow
def test_train_writes_run_dir_health_metrics_checkpoints_and_resumes(ray_local, tmp_path):
    overrides = [f"run.output_dir={tmp_path}", "run.total_env_steps=512",
                 "run.checkpoint_every_iters=2", "run.min_time_s_per_iteration=0",
                 "training.learning_starts=128", "training.batch_size=32",
                 "training.image_encoder=none", "monitoring.exporter_port=0"]
    rc = load_run_config(QUICKSTART, overrides)
    results = []
    run_dir = train(rc, verbose=False, on_result=results.append)

    # Per-episode component sums and the iteration's shares reach the result dict.
    # (NaN in iterations where no episode ended.)
    runners = next(r["env_runners"] for r in reversed(results)
                   if np.isfinite(r["env_runners"].get("reward_components_episode_sum", {})
                                  .get("total", np.nan)))
    sums = runners["reward_components_episode_sum"]
    assert set(sums) == {"efficiency", "lane_keeping", "comfort", "safety", "progress", "total"}
    assert sums["total"] == pytest.approx(
        sum(v for k, v in sums.items() if k != "total"), rel=1e-4, abs=1e-4)
    assert sum(runners["reward_components_share"].values()) == pytest.approx(1.0)

    for name in ("config.yaml", "metrics.jsonl", "exporter_port", "tensorboard"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    last = records[-1]
    assert last["env_steps"] >= 512
    for key in ("q_actor_mean", "q_target_max", "critic_loss", "q_bound", "q_bound_ratio",
                "grad_norm_critic"):
        assert f"default_policy/{key}" in last, key
    assert any(k.startswith("reward_components/") for k in last)
    assert last["divergence_state"] == 0

    checkpoints = complete_checkpoints(run_dir)
    assert 1 <= len(checkpoints) <= rc.run.keep_checkpoints + 1
    meta = read_meta(latest_checkpoint(run_dir))
    assert meta["healthy"] and meta["env_steps"] >= 512
    assert os.path.isdir(os.path.join(latest_checkpoint(run_dir), "replay_buffer"))

    # Resume: counters continue from the checkpoint instead of starting over.
    more = load_run_config(QUICKSTART, overrides[:1] + ["run.total_env_steps=768"] + overrides[2:])
    assert train(more, run_dir=run_dir, verbose=False) == run_dir
    resumed = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    iterations = [r["training_iteration"] for r in resumed]
    assert iterations == sorted(set(iterations))  # one line per iteration, in order
    first_after = next(r for r in resumed if r["training_iteration"] > meta["training_iteration"])
    assert first_after["env_steps"] > meta["env_steps"]
    assert first_after["default_policy/num_updates_lifetime"] > \
        last["default_policy/num_updates_lifetime"]
