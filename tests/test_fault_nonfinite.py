"""NaN/inf from the env (issue 8.4), end to end through a real TD3 run: a
test-only DrivingEnv that corrupts its observation and reward now and then.
Every chunk holding a bad value is dropped before the replay buffer, counted
in nonfinite_total{where="obs"} / {where="reward"} (a chunk holding both in
both), the weights stay finite, and the divergence
verdict warns on an iteration that brought bad values and goes to DIVERGED
only when they keep coming (health.nonfinite_diverge_iters in a row)."""

import dataclasses

import numpy as np
import pytest
import torch

from rllib_av.envs.driving_env import DrivingEnv
from rllib_av.monitoring.callbacks import health_callbacks
from rllib_av.run_config import load_run_config
from rllib_av.training import build_td3_config

from scrape import by_label, scrape

pytestmark = pytest.mark.slow
CORRUPT_EVERY = 90


class CorruptingDrivingEnv(DrivingEnv):
    """Every CORRUPT_EVERY-th step: inf in the state vector; the step after, a NaN
    reward. With 30-step fragments the two land in consecutive iterations."""

    def reset(self, **kwargs):
        self._count = getattr(self, "_count", 0)
        return super().reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self._count += 1
        if self._count % CORRUPT_EVERY == 0:
            obs = {**obs, "state": obs["state"].copy()}
            obs["state"][0] = np.inf
        elif self._count % CORRUPT_EVERY == 1 and self._count > 1:
            reward = float("nan")
        return obs, reward, terminated, truncated, info


def test_nonfinite_env_values_never_reach_buffer_or_weights(ray_local, tmp_path):
    rc = load_run_config("configs/quickstart.yaml", [
        f"run.output_dir={tmp_path}", "run.min_time_s_per_iteration=0",
        "training.learning_starts=50", "training.batch_size=32", "training.buffer_size=5000",
        "training.rollout_fragment_length=30", "monitoring.exporter_port=0",
        "monitoring.tensorboard=false", "health.nonfinite_diverge_iters=2",
    ])
    config = build_td3_config(rc).environment(CorruptingDrivingEnv,
                                              env_config=dataclasses.asdict(rc.env))
    algo = config.build_algo()
    try:
        results = [algo.train() for _ in range(16)]  # 480 steps: ~5 inf + ~5 NaN
        port = health_callbacks(algo).exporter.port
        obs, reward = (results[-1]["nonfinite"][where] for where in ("obs", "reward"))
        storage = algo.learner_group._learner.replay_storage  # the replay lives in the learner
        dropped = storage.num_nonfinite_dropped
        assert 6 <= dropped <= 11, dropped
        # 5 NaN rewards (steps 91, 181, ..., 451) and 5 inf observations, each
        # held by two chunks when the episode goes on past it: that one's and
        # the next (a chunk starts at its predecessor's last observation).
        assert 4 <= reward <= 6 and 4 <= obs <= 10, (obs, reward)
        assert max(obs, reward) <= dropped <= obs + reward
        kept = storage.num_transitions_added
        sampled = results[-1]["env_runners"]["num_env_steps_sampled_lifetime"]
        assert 0 < kept <= sampled - dropped  # each dropped chunk held >= 1 step
        stored = len(storage)  # the filled slots: the rest of the ring is never read
        for name, t in {**storage.obs, "reward": storage.reward, "action": storage.action}.items():
            if t.is_floating_point():
                assert torch.isfinite(t[:stored]).all(), name
        weights = algo.learner_group._learner.module["default_policy"].state_dict()
        assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
        counted = by_label(scrape(port)["rllib_av_nonfinite_total"], "where")
        assert (counted["obs"], counted["reward"]) == (obs, reward)
        # 30-step iterations: the inf (step 90k) lands in iteration 3k, the NaN
        # (step 90k + 1) in iteration 3k + 1. The first warns, the second makes
        # two in a row: DIVERGED; the clean iteration after them is healthy.
        states = {r["training_iteration"]: r["health"]["divergence_state"]["default_policy"]
                  for r in results if "default_policy" in r["health"]["divergence_state"]}
        reasons = {r["training_iteration"]: " ".join(r["health"]["reasons"]["default_policy"])
                   for r in results if "default_policy" in r["health"]["reasons"]}
        for it in (3, 6, 9, 12, 15):
            assert states[it] == 1 and "new in 1 consecutive iteration" in reasons[it], reasons[it]
            assert states[it + 1] == 2 and "new in 2 consecutive iterations" in reasons[it + 1]
        for it in (5, 8, 11, 14):
            assert states[it] == 0, reasons[it]
        print(f"nonfinite: {dropped} chunks dropped, {kept} transitions kept, "
              f"divergence states {states}")
    finally:
        algo.stop()
        health_callbacks(algo).close()
