"""A driver killed with SIGKILL (issue 8.2): `rllib-av train --resume RUN_DIR`
continues from the last complete checkpoint with the replay buffer, the env
step and update counters and the health history, and the replay journal gives
back every env step sampled after that checkpoint, however many times the run
is killed and resumed (issue 13.2); a half-written checkpoint is never loaded,
and only RUN_DIR/checkpoints is looked at (issue 8.7)."""

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


def _journal_entries(run_dir):
    path = os.path.join(run_dir, "replay_journal")
    return os.listdir(path) if os.path.isdir(path) else ["(not yet)"]


def _wait(proc, until, what, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if until():
            return
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    raise AssertionError(f"not within {timeout} s: {what}")


def _kill_right_after_a_checkpoint(proc, run_dir, min_iteration):
    """SIGKILL the driver at a moment when its newest checkpoint holds every
    sample (the journal is empty): stop it, look, then kill it or let it go on."""
    def stopped_in_the_window():
        ckpt = latest_checkpoint(run_dir)
        if not ckpt or read_meta(ckpt)["training_iteration"] < min_iteration \
                or _journal_entries(run_dir):
            return False
        proc.send_signal(signal.SIGSTOP)
        if not _journal_entries(run_dir) and latest_checkpoint(run_dir) == ckpt:
            return True
        proc.send_signal(signal.SIGCONT)
        return False

    _wait(proc, stopped_in_the_window, "a checkpoint with an empty journal after it")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


@pytest.mark.slow
def test_sigkilled_driver_loses_no_env_step_across_two_kills(tmp_path, request):
    """Kill right after a checkpoint, resume, kill again two iterations later,
    resume: the second resume gets every step of the first resumed run back
    from the journal (issue 13.2: new entries numbered below the checkpoint's
    head were never replayed)."""
    fragment = 50
    proc = _cli("--config", "configs/quickstart.yaml", "--set", f"run.output_dir={tmp_path}",
                *[a for s in SETTINGS for a in ("--set", s)],
                "--set", "run.checkpoint_every_iters=1")
    try:
        _wait(proc, lambda: glob.glob(os.path.join(str(tmp_path), "killed-*")), "a run dir")
        run_dir = glob.glob(os.path.join(str(tmp_path), "killed-*"))[0]
        _kill_right_after_a_checkpoint(proc, run_dir, min_iteration=3)
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpt = latest_checkpoint(run_dir)
    meta = read_meta(ckpt)
    ckpt_iter = meta["training_iteration"]
    first_run = _records(run_dir)
    assert first_run[-1]["training_iteration"] == ckpt_iter  # nothing after the checkpoint

    # Resumed without checkpoints until it is done, killed two iterations in.
    proc = _cli("--resume", run_dir, "--set", "run.checkpoint_every_iters=100000")
    try:
        _wait(proc, lambda: len(_records(run_dir)) >= ckpt_iter + 2, "two resumed iterations")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert latest_checkpoint(run_dir) == ckpt
    second_run = _records(run_dir)[ckpt_iter:]
    assert second_run[0]["env_steps"] == meta["env_steps"] + fragment  # the first kill lost 0
    last = second_run[-1]  # the last iteration completed before the second kill

    # A later checkpoint cut short by the crash (both forms) must not be picked,
    # nor anything outside RUN_DIR/checkpoints.
    root = os.path.join(run_dir, "checkpoints")
    os.makedirs(os.path.join(root, ".partial-999998"))
    shutil.copytree(ckpt, os.path.join(root, "iter_999999"))
    os.remove(os.path.join(root, "iter_999999", META))
    outside = os.path.join(str(tmp_path), "iter_999999")
    shutil.copytree(ckpt, outside)  # outside the run dir

    killed_at = time.monotonic()
    resumed = _cli("--resume", run_dir)
    out = resumed.communicate(timeout=600)[0]
    recovered_s = time.monotonic() - killed_at
    assert resumed.returncode == 0, out[-3000:]
    after = _records(run_dir)
    # The history up to the checkpoint is kept line for line; the iterations
    # after it describe weights the resume dropped, so their lines go, and
    # there is one line per iteration.
    assert after[:ckpt_iter] == first_run[:ckpt_iter]
    assert [r["training_iteration"] for r in after] == list(range(1, len(after) + 1))
    first = after[ckpt_iter]
    # The first resumed iteration samples one fragment on top of what the
    # journal gave back: every step the second run sampled before its kill.
    recovered = first["env_steps"] - fragment - meta["env_steps"]
    steps_lost = last["env_steps"] - (meta["env_steps"] + recovered)
    assert steps_lost == 0, (recovered, last["env_steps"], meta["env_steps"])
    # The journaled steps' gradient updates are made again on top of the
    # checkpoint's count, then the fragment's (one update per env step).
    updates_ckpt = first_run[-1]["default_policy/num_updates_lifetime"]
    assert first["default_policy/num_updates_lifetime"] == updates_ckpt + recovered + fragment
    assert first["default_policy/num_updates_lifetime"] == (
        last["default_policy/num_updates_lifetime"] + fragment)
    assert after[-1]["env_steps"] >= 1500
    # Nothing sampled twice or dropped: the final buffer holds one transition per
    # env step the run counted.
    final = latest_checkpoint(run_dir)
    assert read_meta(final)["env_steps"] == after[-1]["env_steps"]
    from rllib_av.run_config import load_run_config
    from rllib_av.training import build_td3_config

    request.getfixturevalue("ray_local")  # only now: the CLI runs above had their own Ray
    algo = build_td3_config(load_run_config(os.path.join(run_dir, "config.yaml"))).build_algo()
    try:
        assert algo.num_replay_transitions == 0
        algo.restore_from_path(outside)
        assert algo.num_replay_transitions == meta["env_steps"]
        algo.restore_from_path(final)
        assert algo.num_replay_transitions == read_meta(final)["env_steps"]
        stored = algo.learner_group._learner.replay_storage.num_transitions_added
        assert stored == read_meta(final)["env_steps"]
    finally:
        algo.stop()
    print(f"driver SIGKILL twice: checkpoint iter {ckpt_iter} at {meta['env_steps']} steps; "
          f"second kill after iteration {last['training_iteration']} at {last['env_steps']} "
          f"steps; journal gave back {recovered} steps, steps lost {steps_lost}; "
          f"resume + finish {recovered_s:.1f}s")
