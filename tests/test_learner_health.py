"""The learner's health statistics on real TD3 updates: a skipped step stays on
the learner's device, a declared reward range the clip swallows whole still
gives a bound, and a learner-side NaN/inf gets the same grace period as any
other (a warning first), with the verdict computed without any exporter."""

import os

import numpy as np
import pytest
import torch
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from rllib_av.health.statistics import ACTOR_STATS, CRITIC_STATS
from rllib_av.monitoring.callbacks import PORT_FILE
from rllib_av.run_config import load_run_config
from rllib_av.training import build_td3_config, train

pytestmark = pytest.mark.slow

PENDULUM = ["env.id=Pendulum-v1", "run.min_time_s_per_iteration=0", "training.batch_size=8",
            "training.buffer_size=2000", "monitoring.exporter=false",
            "monitoring.tensorboard=false"]


def nan_reward_batch(n=16):
    batch = {"obs": np.zeros((n, 3), np.float32), "new_obs": np.zeros((n, 3), np.float32),
             "actions": np.zeros((n, 1), np.float32), "rewards": np.full(n, np.nan, np.float32),
             "terminateds": np.zeros(n, bool), "discounts": np.full(n, 0.99, np.float32)}
    return MultiAgentBatch({"default_policy": SampleBatch(batch)}, env_steps=n)


def test_a_skipped_step_makes_no_tensor_off_the_learners_device(ray_local):
    """Every tensor an update makes belongs on the learner's device. With no
    GPU here, make "meta" the default device: a tensor created without naming
    a device lands there and cannot meet the learner's CPU tensors. A NaN
    reward makes every step's loss non-finite, so each one is skipped."""
    algo = build_td3_config(load_run_config(None, PENDULUM + ["training.learning_starts=0"])
                            ).build_algo()
    try:
        with torch.device("meta"):
            (results,) = algo.learner_group.update(batch=nan_reward_batch())
        stats = results["default_policy"]
        assert stats["nonfinite_loss"].peek() == 2  # both updates' critic loss skipped
        assert np.isnan(stats["grad_norm_critic"].peek())  # no step taken: no norm
        assert set(CRITIC_STATS) | set(ACTOR_STATS) <= set(stats)
    finally:
        algo.stop()


def test_a_declared_range_wholly_outside_the_clip_trains(ray_local):
    """[-20, -2] clipped to [-1, 1] is [-1, -1]: a bound of 1 / (1 - gamma), not
    an inverted range that raises inside training_step."""
    rc = load_run_config(None, PENDULUM + ["training.learning_starts=64",
                                           "training.reward_range=[-20, -2]",
                                           "training.reward_clip=1"])
    algo = build_td3_config(rc).build_algo()
    try:
        results = [algo.train() for _ in range(3)]
    finally:
        algo.stop()
    stats = results[-1]["learners"]["default_policy"]
    assert stats["q_bound"] == pytest.approx(1 / (1 - rc.training.gamma))
    assert np.isfinite(stats["q_bound_ratio"])


def test_a_learner_glitch_warns_before_it_diverges_without_an_exporter(ray_local, tmp_path):
    """One absurd reward (1e30, finite) overflows the Bellman error of every batch
    that holds it: those learner steps are skipped. That is a warning at first,
    and diverged only once it has persisted for health.nonfinite_diverge_iters
    iterations, as for NaN/inf from the env. No exporter runs: the verdict is
    the health layer's, from the result alone."""
    rc = load_run_config(None, PENDULUM + [
        "env.id=broken_envs:GlitchyPendulum-v0", f"run.output_dir={tmp_path}",
        "run.total_env_steps=768", "training.learning_starts=100",
        # Batches of 64 from ~500 transitions: nearly every iteration samples the glitch.
        "training.batch_size=64", "health.probe_episodes=0"])
    seen = []
    run_dir = train(rc, verbose=False, on_result=lambda r: seen.append(
        (r["health"]["divergence_state"]["default_policy"],
         " ".join(r["health"]["reasons"]["default_policy"]))))
    assert not os.path.exists(os.path.join(run_dir, PORT_FILE))
    states = [s for s, _ in seen]
    first = next(i for i, s in enumerate(states) if s)
    assert states[first] == 1 and "NaN/inf new in 1 consecutive iteration" in seen[first][1], seen
    need = rc.health.nonfinite_diverge_iters
    for i, s in enumerate(states):
        if s == 2:  # only after need - 1 non-healthy iterations in a row before it
            assert i - first >= need - 1 and all(states[i - need + 1:i]), seen
    assert 2 in states, seen  # the glitch stays in the buffer: it persists
