"""The learner owns the replay (issue 15): each learner actor holds a replay
shard and samples its own batches; with two CPU learners (gloo) gradients are
really averaged, so both hold the same weights after every update and learn
what one learner learns at the same total batch; a killed learner actor comes
back from the last checkpoint plus the journal with nothing lost."""

import sys

import gymnasium as gym
import numpy as np
import pytest
import ray
import torch

from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns

from rllib_av.algorithms.td3 import TD3Config
from rllib_av.checkpoints import save_checkpoint

pytestmark = pytest.mark.slow
STEPS = 2000
EVAL_EPISODES = 10
# Learners unpickle this module's env class by value, not by import.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class TargetTrackingEnv(gym.Env):
    """Each step shows a random 2-D target; reward -|action - target|^2; ten
    steps an episode (truncated, so the critic bootstraps). A random policy
    scores about -13 per episode, the best one 0; TD3 gets close within a
    couple of thousand updates."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, config=None):
        self.rng = np.random.default_rng(0)

    def _new_target(self):
        self.target = self.rng.uniform(-1, 1, 2).astype(np.float32)
        return self.target.copy()

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t = 0
        return self._new_target(), {}

    def step(self, action):
        reward = -float(np.sum((np.clip(action, -1, 1) - self.target) ** 2))
        self.t += 1
        return self._new_target(), reward, False, self.t >= 10, {}


def tracking(num_learners: int, total_batch: int, **training):
    return (TD3Config().environment(TargetTrackingEnv)
            .training(gamma=0.9, num_steps_sampled_before_learning_starts=200,
                      replay_buffer_config={"capacity": 20_000},
                      train_batch_size_per_learner=total_batch // max(1, num_learners),
                      actor_lr=1e-3, critic_lr=1e-3, actor_hiddens=[64, 64],
                      critic_hiddens=[64, 64], **training)
            .env_runners(num_env_runners=0, rollout_fragment_length=100)
            .learners(num_learners=num_learners)
            .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=0)
            .debugging(seed=0))


def learner_weights(algo):
    def weights(learner):
        state = learner.module[DEFAULT_MODULE_ID].unwrapped().state_dict()
        return learner.shard_index, {k: v.cpu().numpy() for k, v in state.items()}

    return dict(r.get() for r in algo.learner_group.foreach_learner(weights))


def shard_sizes(algo):
    return sorted(r.get() for r in algo.learner_group.foreach_learner(
        lambda l: (l.shard_index, l.replay_storage.num_transitions_added)))


def eval_return(algo) -> float:
    """Mean return of the deterministic policy."""
    module = algo.get_module()
    env = TargetTrackingEnv()
    returns = []
    for ep in range(EVAL_EPISODES):
        obs, _ = env.reset(seed=1000 + ep)
        done, total = False, 0.0
        while not done:
            with torch.no_grad():
                a = module.forward_inference({Columns.OBS: torch.as_tensor(obs[None])})
            obs, r, term, trunc, _ = env.step(a[Columns.ACTIONS][0].numpy())
            total += r
            done = term or trunc
        returns.append(total)
    return float(np.mean(returns))


def train_to(algo, env_steps: int) -> dict:
    while True:
        result = algo.train()
        if result["env_runners"]["num_env_steps_sampled_lifetime"] >= env_steps:
            return result


def test_two_learners_hold_identical_weights_and_learn_like_one(ray_local):
    """2 gloo learners x 64 vs 1 learner x 128: identical weights on both
    learners after every iteration, each trained from its own shard, and an
    eval return within noise of the single learner's."""
    torch.set_num_threads(1)
    results = {}
    for n in (2, 1):
        algo = tracking(n, total_batch=128).build_algo()
        try:
            if n == 2:
                start = learner_weights(algo)
                assert all(np.array_equal(start[0][k], start[1][k]) for k in start[0])
                for _ in range(5):  # 500 env steps: 300 updates, each all-reduced
                    algo.train()
                    weights = learner_weights(algo)
                    for key in weights[0]:
                        np.testing.assert_array_equal(weights[0][key], weights[1][key],
                                                      err_msg=key)
                assert not np.array_equal(weights[0]["critic.q1_net.0.weight"],
                                          start[0]["critic.q1_net.0.weight"])
                sizes = shard_sizes(algo)
                assert [i for i, _ in sizes] == [0, 1] and all(s > 0 for _, s in sizes)
                assert sum(s for _, s in sizes) == algo.num_replay_transitions == 500
            result = train_to(algo, STEPS)
            # One (synchronized) update per env step from the iteration reaching
            # learning_starts on, both ways.
            assert result["learners"][DEFAULT_MODULE_ID]["num_updates_lifetime"] == STEPS - 100
            results[n] = eval_return(algo)
        finally:
            algo.stop()
    print(f"eval return after {STEPS} steps: 2 learners x 64 {results[2]:.2f}, "
          f"1 learner x 128 {results[1]:.2f} (random: about -13)")
    assert results[1] > -2.0 and results[2] > -2.0, results
    assert abs(results[2] - results[1]) < 1.0, results


def test_killed_learner_actor_comes_back_from_checkpoint_plus_journal(ray_local, tmp_path):
    run_dir = str(tmp_path)
    algo = (tracking(1, total_batch=32)
            .rllib_av(replay_journal_dir=str(tmp_path / "replay_journal"))).build_algo()
    try:
        for _ in range(6):
            result = algo.train()
        save_checkpoint(algo, run_dir, result)
        for _ in range(2):
            result = algo.train()
        steps = result["env_runners"]["num_env_steps_sampled_lifetime"]
        updates = result["learners"][DEFAULT_MODULE_ID]["num_updates_lifetime"]
        assert steps == 800 and updates == 800 - 100

        (learner_actor,) = algo.learner_group._workers
        ray.kill(learner_actor)
        result = algo.train()
        # The new learner holds the checkpoint's shard plus everything journaled
        # since (this iteration's fragment included): no env step lost.
        assert result["env_runners"]["num_env_steps_sampled_lifetime"] == steps + 100
        assert shard_sizes(algo) == [(0, steps + 100)]
        assert result["learners"][DEFAULT_MODULE_ID]["num_updates_lifetime"] == updates + 100
        assert result["learner_restarts"] == 1
        assert algo.learner_group._workers[0] != learner_actor
        algo.train()  # and it keeps training
    finally:
        algo.stop()
