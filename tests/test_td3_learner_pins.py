"""The TD3 learner against TD3 written out by hand: one ``learner.update`` must
move every network exactly as the paper's update does (critic Adam step on
MSE(Q1, y) + MSE(Q2, y) with L2, actor Adam step on -Q1(s, mu(s)) plus the
pre-tanh penalty, Polyak targets) and report the numbers of that step; a
skipped step drops out of the reductions; the replay path samples n-step
returns in training units and counts what it trained on; the shard survives a
save and load with its sampling stream."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ALL_MODULES, MODULE_TRAIN_BATCH_SIZE_MEAN, NUM_ENV_STEPS_TRAINED, NUM_MODULE_STEPS_TRAINED,
)
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

from rllib_av.algorithms.td3 import TD3Config
from rllib_av.replay.episode_chunk import BOX_KEY, EpisodeChunk
from rllib_av.replay.sampling import DISCOUNTS
from test_td3_semantics import ACT, B, OBS, batch, make_learner

MODULE = "default_policy"
HAND = dict(policy_delay=1, tau=0.3, critic_l2=0.01, actor_preactivation_l2=0.05, actor_lr=1e-2,
            critic_lr=2e-2, policy_noise=0.0, gamma=0.9)


def seeded_learner(seed, **training):
    """make_learner's learner, its replay sampler seeded."""
    config = (TD3Config().environment(observation_space=OBS, action_space=ACT)
              .training(train_batch_size_per_learner=B, actor_hiddens=[16], critic_hiddens=[16],
                        replay_buffer_config={"capacity": 1000}, **training)
              .debugging(seed=seed))
    return config.build_learner()


def update(learner, data):
    n = len(data[Columns.REWARDS])
    results = learner.update(batch=MultiAgentBatch({MODULE: SampleBatch(data)}, env_steps=n))
    return {k: v.peek() for k, v in results[MODULE].items()}


def norm(params):
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item()


def td3_by_hand(module, data, c):
    """One TD3 gradient step on a copy of ``module``, as the paper writes it;
    returns the copy and the step's numbers."""
    ref = copy.deepcopy(module)
    t = {k: torch.as_tensor(v) for k, v in data.items()}
    critic_params = list(ref.encoder.parameters()) + list(ref.critic.parameters())
    actor_params = list(ref.actor.parameters())
    critic_opt = torch.optim.Adam(critic_params, lr=c["critic_lr"], weight_decay=c["critic_l2"])
    actor_opt = torch.optim.Adam(actor_params, lr=c["actor_lr"])

    out = ref.forward_train(t)
    q1, q2 = out["q1_preds"], out["q2_preds"]
    y = t[Columns.REWARDS] + t[DISCOUNTS] * (~t[Columns.TERMINATEDS]).float() * \
        ref.forward_target(t, 0.0, 0.0)["q_next"]
    critic_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
    critic_loss.backward(inputs=critic_params)
    numbers = {"critic_loss": critic_loss.item(), "grad_norm_critic": norm(critic_params),
               "q_target_mean": y.mean().item(), "td_error_abs_mean": (q1 - y).abs().mean().item()}
    critic_opt.step()

    features = out["features"].detach()
    pre = ref.actor.pre_tanh(features)
    q = ref.critic.q1(features, torch.tanh(pre))  # the critic after its step
    actor_loss = -q.mean()
    (actor_loss + c["actor_preactivation_l2"] * pre.pow(2).mean()).backward(inputs=actor_params)
    numbers.update(actor_loss=actor_loss.item(), grad_norm_actor=norm(actor_params),
                   q_actor_mean=q.mean().item(), q_actor_max=q.max().item(),
                   q_actor_min=q.min().item(), q_actor_std=q.std().item())
    actor_opt.step()

    with torch.no_grad():
        for source, target in ref.get_target_network_pairs():
            for s, p in zip(source.parameters(), target.parameters()):
                p.copy_(c["tau"] * s + (1 - c["tau"]) * p)
    return ref, numbers


def test_one_update_is_td3_written_out_by_hand():
    learner, module = make_learner(**HAND)
    data = batch(seed=5, terminated=np.arange(B) % 3 == 0)
    ref, expected = td3_by_hand(module, data, HAND)
    stats = update(learner, data)
    for net in ("critic", "actor", "target_critic", "target_actor"):
        for (name, got), want in zip(getattr(module, net).named_parameters(),
                                     getattr(ref, net).parameters()):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=f"{net}.{name}")
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_a_skipped_step_drops_out_of_every_reduction():
    """Three critic steps in one call, the middle one on a NaN reward (skipped,
    weights kept): the numbers it spoils are reduced over the other two alone,
    exactly as a learner that never saw it reports them."""
    first, third = batch(seed=1), batch(seed=3)
    spoiled = batch(seed=2)
    spoiled[Columns.REWARDS][0] = np.nan
    both = {k: np.concatenate([first[k], spoiled[k], third[k]]) for k in first}
    clean = {k: np.concatenate([first[k], third[k]]) for k in first}
    a, _ = make_learner(policy_delay=1000, policy_noise=0.0)
    b, _ = make_learner(policy_delay=1000, policy_noise=0.0)
    b.module.set_state(a.module.get_state())
    with_nan, without = update(a, both), update(b, clean)
    assert with_nan["nonfinite_loss"] == 1
    for key in ("critic_loss", "q_target_mean", "q_target_max", "q_target_min",
                "td_error_abs_mean", "grad_norm_critic"):
        assert with_nan[key] == pytest.approx(without[key], rel=1e-5), key


def test_a_statistic_no_step_could_compute_stays_nan():
    learner, _ = make_learner(policy_delay=1000)
    data = batch()
    data[Columns.REWARDS][0] = np.nan
    stats = update(learner, data)
    for key in ("critic_loss", "q_target_mean", "q_target_max", "q_target_min",
                "grad_norm_critic"):
        assert np.isnan(stats[key]), (key, stats[key])
    assert np.isfinite(stats["q1_mean"])


def chunks(n_episodes, reward=1.0):
    """Two-step episodes, each terminated, of a Box observation."""
    rng = np.random.default_rng(0)
    return [EpisodeChunk(id=f"e{i}", obs={BOX_KEY: rng.uniform(-1, 1, (3, 3)).astype(np.float32)},
                         actions=rng.uniform(-1, 1, (2, 2)).astype(np.float32),
                         rewards=np.full(2, reward, np.float32), terminated=True, done=True)
            for i in range(n_episodes)]


def test_the_replay_path_trains_on_n_step_returns_in_training_units_and_counts_them():
    """Episodes r = 1, 1 then terminated, gamma 0.5, n_step 2: the first step's
    target is 1 + 0.5 * 1 (the episode ends inside the two steps), the second's
    1, whatever the critic says; rewards reach the critic times reward_scale."""
    learner = seeded_learner(0, policy_delay=1000, gamma=0.5, n_step=2)
    assert learner.add_chunks(chunks(10)) == 20
    results = learner.update_from_replay(3, reward_scale=4.0)
    stats = {k: v.peek() for k, v in results[MODULE].items()}
    trained = {k: v.peek() for k, v in results[ALL_MODULES].items()}
    assert stats["q_target_max"] == pytest.approx(1.5 * 4.0)
    assert stats["q_target_min"] == pytest.approx(1.0 * 4.0)
    assert stats["num_updates_lifetime"] == 3 and learner._critic_steps[MODULE] == 3
    assert stats[NUM_MODULE_STEPS_TRAINED] == 3 * B
    assert stats[MODULE_TRAIN_BATCH_SIZE_MEAN] == 3 * B
    assert trained[NUM_ENV_STEPS_TRAINED] == trained[NUM_MODULE_STEPS_TRAINED] == 3 * B


def test_the_shard_and_its_sampling_stream_survive_save_and_load(tmp_path):
    a = seeded_learner(0)
    a.add_chunks(chunks(6))
    a.save_replay(str(tmp_path))
    b = seeded_learner(7)
    b.load_replay(str(tmp_path))
    assert b.replay_storage.num_transitions_added == 12
    x, y = a.replay_sampler.sample(32), b.replay_sampler.sample(32)
    for key in (Columns.OBS, Columns.ACTIONS, Columns.REWARDS, Columns.NEXT_OBS):
        assert torch.equal(x[key], y[key]), key


def test_the_terminal_batch_holds_the_newest_terminal_transitions():
    learner, _ = make_learner()
    assert learner.replay_terminal_batch(5, 1.0) is None
    learner.add_chunks(chunks(4, reward=2.0))
    terminal = learner.replay_terminal_batch(3, reward_scale=0.5)
    assert terminal[Columns.TERMINATEDS].tolist() == [True] * 3
    assert terminal[Columns.REWARDS].tolist() == [1.0] * 3
    newest = [c.obs[BOX_KEY][1] for c in chunks(4)[1:]]  # each episode's second step
    assert np.allclose(terminal[Columns.OBS].numpy(), newest)


def test_the_guard_raised_smoothing_noise_is_the_one_in_the_targets():
    learner, module = make_learner(policy_delay=1000, policy_noise=0.0, noise_clip=1.0)
    data = {k: torch.as_tensor(v) for k, v in batch().items()}
    assert torch.equal(learner.bellman_targets(MODULE, data), learner.bellman_targets(MODULE, data))
    learner.policy_noise_override = 0.5
    assert not torch.equal(learner.bellman_targets(MODULE, data),
                           learner.bellman_targets(MODULE, data))
    assert update(learner, batch())["policy_noise"] == 0.5


def test_each_learner_holds_its_share_of_the_buffer():
    config = (TD3Config().environment(observation_space=OBS, action_space=ACT)
              .training(replay_buffer_config={"capacity": 1000}).learners(num_learners=4))
    learner = config.build_learner()
    assert learner.replay_storage.capacity == 250
    assert learner.replay_storage.padded_keys == frozenset()


def test_the_learner_state_carries_weights_optimizers_and_the_delay_phase():
    """What a checkpoint keeps of the learner (the Algorithm-level round trip
    is test_td3_algorithm's, which needs Ray): a learner set to another's state
    makes the same next update, actor step and target move included."""
    a, module_a = make_learner(policy_delay=3, policy_noise=0.0)
    for seed in (1, 2, 3, 4):  # critic step 4: one off the next actor step
        update(a, batch(seed=seed))
    b, module_b = make_learner(policy_delay=3, policy_noise=0.0)
    b.set_state(a.get_state())
    assert b._critic_steps[MODULE] == 4
    for learner in (a, b):
        update(learner, batch(seed=5))
        update(learner, batch(seed=6))  # critic step 6: actor and targets move
    for (name, x), y in zip(module_a.state_dict().items(), module_b.state_dict().values()):
        torch.testing.assert_close(x, y, msg=name)


def test_the_actor_gradients_are_clipped_at_actor_grad_clip():
    learner, module = make_learner(actor_grad_clip=1e-3, policy_delay=1)
    stats = update(learner, batch())
    clipped = norm(list(module.actor.parameters()))
    assert clipped == pytest.approx(1e-3, rel=1e-3)
    assert stats["grad_norm_actor"] > 10 * clipped  # reported before the clip


def test_the_reported_smoothing_noise_is_the_one_in_effect_now():
    """The guard raises the noise between two updates: the second reports the
    raised value, not an average with the first."""
    learner, _ = make_learner(policy_delay=1000, policy_noise=0.2)
    assert update(learner, batch(seed=1))["policy_noise"] == 0.2
    learner.policy_noise_override = 0.5
    assert update(learner, batch(seed=2))["policy_noise"] == 0.5


def test_the_total_loss_is_the_last_critic_loss_and_zero_without_a_step():
    learner = seeded_learner(0, policy_delay=1000)
    learner.add_chunks(chunks(10))
    stats = {k: v.peek() for k, v in learner.update_from_replay(1)[MODULE].items()}
    assert stats["total_loss"] == stats["critic_loss"] > 0
    assert learner.update_from_replay(0)[MODULE]["total_loss"].peek() == 0.0


@pytest.mark.parametrize("cause", ["nonfinite_loss", "nonfinite_grads"])
def test_skipped_steps_are_counted_one_each_over_the_learners_lifetime(cause):
    """Each call reports its own skipped steps (a NaN reward, or a NaN gradient
    from a hook on one critic weight); the Algorithm's metrics (a root logger
    aggregating every call's results) sum them over the run."""
    learner, module = make_learner(policy_delay=1000)
    data = batch()
    if cause == "nonfinite_loss":
        data[Columns.REWARDS][0] = np.nan
    else:
        next(module.critic.parameters()).register_hook(lambda g: torch.full_like(g, np.nan))
    two = {k: np.concatenate([data[k], data[k]]) for k in data}
    run = MetricsLogger(root=True)
    for steps in (two, data):
        n = len(steps[Columns.REWARDS])
        results = learner.update(batch=MultiAgentBatch({MODULE: SampleBatch(steps)}, env_steps=n))
        assert results[MODULE][cause].peek() == n // B
        run.aggregate([results], key="learners")
    assert run.reduce()["learners"][MODULE][cause].peek() == 3
