"""A driver killed with SIGKILL (issue 8.2): `rllib-av train --resume RUN_DIR`
continues from the last complete checkpoint with the replay buffer, the env
step and update counters and the health history, and the replay journal gives
back every env step sampled after that checkpoint; a half-written checkpoint is
never loaded, and only RUN_DIR/checkpoints is looked at (issue 8.7)."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from rllib_av.checkpoints import META, complete_checkpoints, latest_checkpoint, read_meta

SETTINGS = ["run.name=killed", "run.total_env_steps=1500", "run.min_time_s_per_iteration=0",
            "run.checkpoint_every_iters=4", "run.keep_checkpoints=2",
            "training.learning_starts=100", "training.batch_size=32",
            # A small buffer: checkpoints write the whole preallocated buffer.
            "training.buffer_size=5000", "training.rollout_fragment_length=50",
            "monitoring.exporter_port=0", "monitoring.tensorboard=false"]


def _records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _cli(*args):
    # RAY_ADDRESS=local: a Ray of its own, as on a fresh machine; without it
    # ray.init() joins whatever other Ray instance runs on this box.
    return subprocess.Popen([sys.executable, "-m", "rllib_av.cli", "train", "--quiet", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_ADDRESS": "local"})


def test_half_written_checkpoints_are_never_loaded(tmp_path):
    run_dir = str(tmp_path)
    root = os.path.join(run_dir, "checkpoints")
    good = os.path.join(root, "iter_000004")
    os.makedirs(good)
    with open(os.path.join(good, META), "w") as f:
        json.dump({"training_iteration": 4, "env_steps": 200, "healthy": True}, f)
    os.makedirs(os.path.join(root, ".partial-000008"))  # cut short before the rename
    os.makedirs(os.path.join(root, "iter_000012"))  # no meta: not written by save_checkpoint
    assert complete_checkpoints(run_dir) == [good]
    assert latest_checkpoint(run_dir) == good


@pytest.mark.slow
def test_sigkilled_driver_resumes_from_last_complete_checkpoint(tmp_path, request):
    proc = _cli("--config", "configs/quickstart.yaml", "--set", f"run.output_dir={tmp_path}",
                *[a for s in SETTINGS for a in ("--set", s)])
    try:
        run_dir, ckpt = None, None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            dirs = glob.glob(os.path.join(str(tmp_path), "killed-*"))
            run_dir = dirs[0] if dirs else None
            ckpt = run_dir and latest_checkpoint(run_dir)
            # Kill mid-run: a checkpoint exists and a later iteration is done.
            if ckpt and len(_records(run_dir)) > read_meta(ckpt)["training_iteration"] + 1:
                break
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert ckpt, "no checkpoint within 300 s"
        proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = _records(run_dir)
    meta = read_meta(ckpt)
    ckpt_iter = meta["training_iteration"]
    at_ckpt = before[ckpt_iter - 1]
    assert at_ckpt["training_iteration"] == ckpt_iter and at_ckpt["env_steps"] == meta["env_steps"]
    last = before[-1]  # the last iteration completed before the kill
    assert last["env_steps"] > meta["env_steps"]

    # A later checkpoint cut short by the crash (both forms) must not be picked,
    # nor anything outside RUN_DIR/checkpoints.
    root = os.path.join(run_dir, "checkpoints")
    os.makedirs(os.path.join(root, ".partial-999998"))
    shutil.copytree(ckpt, os.path.join(root, "iter_999999"))
    os.remove(os.path.join(root, "iter_999999", META))
    outside = os.path.join(str(tmp_path), "iter_999999")
    shutil.copytree(ckpt, outside)  # outside the run dir

    resumed = _cli("--resume", run_dir)
    out = resumed.communicate(timeout=600)[0]
    recovered_s = time.monotonic() - killed_at
    assert resumed.returncode == 0, out[-3000:]
    after = _records(run_dir)
    new = after[ckpt_iter:]
    # The history up to the checkpoint is kept line for line; the iterations
    # after it describe weights the resume dropped, so their lines go, and
    # there is one line per iteration.
    assert after[:ckpt_iter] == before[:ckpt_iter]
    assert [r["training_iteration"] for r in after] == list(range(1, len(after) + 1))
    first = new[0]
    assert first["training_iteration"] == ckpt_iter + 1
    # The first resumed iteration samples one fragment on top of what the
    # journal gave back: every step sampled before the kill, none again.
    fragment = 50
    recovered = first["env_steps"] - fragment - meta["env_steps"]
    steps_lost = last["env_steps"] - (meta["env_steps"] + recovered)
    assert steps_lost <= 0, (recovered, last["env_steps"], meta["env_steps"])
    # The journaled steps' gradient updates are made again on top of the
    # checkpoint's count, then the fragment's (one update per env step).
    updates_ckpt = at_ckpt["default_policy/num_updates_lifetime"]
    assert first["default_policy/num_updates_lifetime"] == updates_ckpt + recovered + fragment
    assert new[-1]["env_steps"] >= 1500
    # Nothing sampled twice or dropped: the final buffer holds one transition per
    # env step the run counted.
    final = latest_checkpoint(run_dir)
    assert read_meta(final)["env_steps"] == after[-1]["env_steps"]
    # The checkpoint holds the replay buffer: one transition per env step.
    from rllib_av.run_config import load_run_config
    from rllib_av.training import build_td3_config

    request.getfixturevalue("ray_local")  # only now: the CLI runs above had their own Ray
    algo = build_td3_config(load_run_config(os.path.join(run_dir, "config.yaml"))).build_algo()
    try:
        assert algo.replay_buffer.num_transitions_added == 0
        algo.restore_from_path(outside)
        assert algo.replay_buffer.num_transitions_added == meta["env_steps"]
        algo.restore_from_path(final)
        assert algo.replay_buffer.num_transitions_added == read_meta(final)["env_steps"]
    finally:
        algo.stop()
    print(f"driver SIGKILL: checkpoint iter {ckpt_iter} at {meta['env_steps']} steps, killed "
          f"after iteration {last['training_iteration']} at {last['env_steps']} steps; "
          f"journal gave back {recovered} steps, steps lost {max(steps_lost, 0)}; "
          f"resume + finish {recovered_s:.1f}s; updates {updates_ckpt} -> "
          f"{first['default_policy/num_updates_lifetime']}")
