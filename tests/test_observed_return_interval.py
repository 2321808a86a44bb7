"""The return interval without a declared reward range: every Bellman target
is y = r + gamma min Q' with r a stored reward, so the running min/max over
every reward the critic trained on bounds the targets' fixed points in
[r_lo, r_hi] / (1 - gamma). The driver keeps that min/max next to the reward
processor (raw, checkpointed), the algorithm logs the interval in training units
(q_return_*_observed), and the verdict and the gate judge its short end as
they do a declared one's. The real TD3 runs are in the set-up zoo
(pendulum_undeclared, lopsided_*_undeclared)."""

import json

import numpy as np
import pytest

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.utils.metrics import LEARNER_RESULTS

from rllib_av.algorithms.td3 import TD3Config
from rllib_av.health.divergence import DivergenceState, judge
from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.preflight import evaluate, is_go
from rllib_av.health.q_bound import interval_excursion, return_interval, training_return_interval
from rllib_av.replay.reward_processing import ObservedRewardRange, RewardProcessor

from test_diagnosis import HEALTHY_PROBE

S = HealthSettings()
GAMMA = 0.99
PENDULUM = return_interval(-16.2736044, 0.0, GAMMA)  # [-1627, 0]


def test_the_range_of_every_reward_is_kept_across_checkpoints():
    seen = ObservedRewardRange()
    assert seen.range is None
    seen.observe(np.array([-1.0, -2.0, 0.5]))
    seen.observe(np.array([], np.float32))
    seen.observe(np.array([-100.0]))  # one rare crash: kept for good
    for _ in range(50):
        seen.observe(np.array([0.1, 0.2]))
    assert seen.range == (-100.0, 0.5)
    # Through a checkpoint (JSON, as the algorithm writes it) and on after resume.
    resumed = ObservedRewardRange()
    resumed.set_state(json.loads(json.dumps(seen.get_state())))
    assert resumed.range == (-100.0, 0.5)
    resumed.observe(np.array([3.0]))
    assert resumed.range == (-100.0, 3.0)


def test_the_raw_range_maps_through_the_current_clip_and_scale():
    p, seen = RewardProcessor(GAMMA, clip=10.0, scale_by_return_std=True), ObservedRewardRange()
    for rewards in (np.array([-50.0, 2.0]), np.array([4.0, -3.0])):
        p.observe("a", rewards, done=False)
        seen.observe(rewards)
    low, high = training_return_interval(seen.range, GAMMA, clip=10.0, scale=p.scale)
    assert p.scale != 1.0
    assert low == pytest.approx(-10.0 * p.scale / (1 - GAMMA))
    assert high == pytest.approx(4.0 * p.scale / (1 - GAMMA))


def observed(interval, **q):
    """Learner stats without a declared range (no q_bound): every Q statistic
    at the interval's middle (the maxima a quarter of it above), the observed
    interval, then ``q``."""
    low, high = interval
    mid, top = (low + high) / 2, (3 * low + 5 * high) / 8
    base = {"q_actor_mean": mid, "q_actor_max": top, "q_actor_min": mid,
            "q_target_mean": mid, "q_target_max": top, "q_target_min": mid,
            "q1_mean": mid, "q2_mean": mid, "q_return_min_observed": low,
            "q_return_max_observed": high}
    base.update(q)
    return base


def test_the_verdict_judges_the_short_end_of_the_observed_interval():
    """An undeclared Pendulum whose critic runs up past 0: |Q| is far under the
    observed bound (1627), the short end catches it."""
    assert judge(observed(PENDULUM), S, gamma=GAMMA).state is DivergenceState.HEALTHY
    v = judge(observed(PENDULUM, q_actor_max=412.0), S, gamma=GAMMA)
    assert v.state is DivergenceState.DIVERGED
    (f,) = v.findings
    assert f.rule == "q_interval" and f.subject == "q_actor_max above the highest true return"
    # A declared range, where there is one, is what is judged.
    declared = {**observed(PENDULUM, q_actor_max=412.0), "q_return_min": -2000.0,
                "q_return_max": 1000.0}
    assert judge(declared, S, gamma=GAMMA).state is DivergenceState.HEALTHY


def test_the_observed_interval_holds_where_the_critic_started():
    """Rewards in [1, 2] (returns in [100, 200]): a critic that started with Q
    in [-5, 3] and is still a little below 0 is on its way, not wrong; one that
    started in [-1, 3] is below where it started by more than the slack. The
    declared interval is widened to 0 alone (as it was before)."""
    positive = return_interval(1.0, 2.0, GAMMA)
    qs = {"q_actor_mean": 0.5, "q_actor_max": 5.0, "q_actor_min": -4.5, "q_target_mean": 0.5,
          "q_target_max": 4.0, "q_target_min": -4.0, "q1_mean": 1.0, "q2_mean": 1.0}
    obs = {**qs, "q_return_min_observed": positive[0], "q_return_max_observed": positive[1]}
    e = interval_excursion(obs, GAMMA, S.q_interval_slack)
    assert e is not None and not e.above and e.end == 0.0
    assert interval_excursion(obs, GAMMA, S.q_interval_slack, start=(-5.0, 3.0)) is None
    e = interval_excursion(obs, GAMMA, S.q_interval_slack, start=(-1.0, 3.0))
    assert e is not None and e.end == -1.0 and str(e).startswith("q_actor_min -4.5 below -1 ")
    declared = {**qs, "q_return_min": positive[0], "q_return_max": positive[1]}
    assert interval_excursion(declared, GAMMA, S.q_interval_slack, start=(-5.0, 3.0)) is not None


@pytest.mark.parametrize("qs,go", [([-50.0, -20.0, 3.0, 9.0], True),
                                   ([-50.0, 40.0, 300.0, 900.0], False)])
def test_the_gate_judges_the_short_end_of_the_observed_interval(qs, go):
    records = [{"training_iteration": i + 1, "env_steps": 256 + 64 * i,
                "episode_len_mean": 200.0, "episode_return_mean": -900.0,
                "divergence_state": 0,
                **{f"default_policy/{k}": v
                   for k, v in observed(PENDULUM, q_actor_max=q).items()}}
               for i, q in enumerate(qs)]
    checks = {c.name: c for c in evaluate(records, [HEALTHY_PROBE], S, 200, GAMMA)}
    assert (checks["q_bound"].passed is not False) is go, checks["q_bound"]
    assert is_go(list(checks.values())) is go
    if not go:
        assert "q_actor_max 900 above the highest true return 0" in checks["q_bound"].measured


def test_td3_logs_the_observed_interval_and_resumes_it(ray_local, tmp_path):
    """Pendulum declares no range: the learner results carry the interval of
    every reward stored (no q_bound), and a restored algorithm has the same."""
    config = (TD3Config().environment("Pendulum-v1")
              .training(num_steps_sampled_before_learning_starts=64,
                        train_batch_size_per_learner=32, actor_hiddens=[32], critic_hiddens=[32],
                        reward_scaling=True)
              .env_runners(num_env_runners=0, rollout_fragment_length=50)
              .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=0))
    algo = config.build_algo()
    for _ in range(3):
        result = algo.train()
    stats = result[LEARNER_RESULTS]["default_policy"]
    seen = algo.rewards_seen.range
    assert -16.28 <= seen[0] < seen[1] <= 0.0
    assert "q_bound" not in stats
    # The mean over the iteration's calls: the range only widens, the scale moves.
    assert stats["q_return_min_observed"] < 0.0
    assert stats["q_return_max_observed"] <= 0.0
    assert stats["q_return_min_observed"] <= seen[1] * algo.reward_processor.scale / (1 - GAMMA)
    path = algo.save_to_path(str(tmp_path / "ckpt"))
    algo.stop()
    restored = Algorithm.from_checkpoint(path)
    try:
        assert restored.rewards_seen.range == seen
        restored.train()
        low, high = restored.rewards_seen.range
        assert low <= seen[0] and high >= seen[1]
    finally:
        restored.stop()
