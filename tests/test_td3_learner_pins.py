"""The TD3 learner against TD3 written out by hand: one ``learner.update`` must
move every network exactly as the paper's update does (critic Adam step on
MSE(Q1, y) + MSE(Q2, y) with L2, actor Adam step on -Q1(s, mu(s)) plus the
pre-tanh penalty, Polyak targets) and report the numbers of that step; a
skipped step drops out of the reductions; the replay path samples n-step
returns in training units and counts what it trained on; the shard survives a
save and load with its sampling stream."""

import copy
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ray.rllib.core import COMPONENT_OPTIMIZER, COMPONENT_RL_MODULE
from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ALL_MODULES, MODULE_TRAIN_BATCH_SIZE_MEAN, NUM_ENV_STEPS_TRAINED,
    NUM_ENV_STEPS_TRAINED_LIFETIME, NUM_MODULE_STEPS_TRAINED, NUM_MODULE_STEPS_TRAINED_LIFETIME,
    WEIGHTS_SEQ_NO,
)
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

from rllib_av.algorithms.td3 import TD3Config, td3_learner
from rllib_av.config_schema import ConfigError
from rllib_av.replay.episode_chunk import BOX_KEY, EpisodeChunk
from rllib_av.replay.sampling import DISCOUNTS
from rllib_av.replay.storage import device_free_bytes, slot_bytes
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


def hand_targets(module, t):
    """y = r + discount * (1 - terminated) * min(Q1', Q2'), no smoothing noise."""
    q_next = module.forward_target(t, 0.0, 0.0)["q_next"]
    return t[Columns.REWARDS] + t[DISCOUNTS] * (~t[Columns.TERMINATEDS]).float() * q_next


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
    y = hand_targets(ref, t)
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
    1, whatever the critic says; rewards reach the critic times reward_scale
    (1 unless given)."""
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
    raw = {k: v.peek() for k, v in learner.update_from_replay(1)[MODULE].items()}
    assert (raw["q_target_min"], raw["q_target_max"]) == pytest.approx((1.0, 1.5))  # scale 1


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
    # On the learner's device, not torch's default one (a GPU learner's loss
    # must not be a CPU tensor; meta stands in for "another device" here).
    with torch.device("meta"):
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


def test_an_oversized_shard_is_refused_in_one_line_before_it_is_allocated():
    """The shard's own numbers: each learner's share of the capacity, the bytes
    of one slot, the memory the learner's device has, and the largest buffer
    all the learners together could hold."""
    capacity, leaves = 10**13, {BOX_KEY: (OBS.shape, OBS.dtype)}
    per_slot = slot_bytes(leaves, ACT.shape[0])
    for learners in (0, 4):
        shards = max(1, learners)
        config = (TD3Config().environment(observation_space=OBS, action_space=ACT)
                  .training(replay_buffer_config={"capacity": capacity})
                  .learners(num_learners=learners))
        with pytest.raises(ConfigError) as e:
            config.build_learner()
        shard = capacity // shards
        match = re.fullmatch(
            rf"training\.buffer_size: {capacity} is not allowed; a replay shard of {shard} "
            rf"transitions x {per_slot} B needs {shard * per_slot / 2**30:.1f} GiB on the "
            r"learner's cpu, which has ([\d.]+) GiB free; expected <= (\d+)", str(e.value))
        assert match, str(e.value)
        free = device_free_bytes(torch.device("cpu"))  # the host's, which moves a little
        assert float(match[1]) == pytest.approx(free / 2**30, rel=0.1)
        assert int(match[2]) == pytest.approx(free // per_slot * shards, rel=0.1)


def learner_at(index, seed):
    """Learner ``index`` of a run seeded with ``seed`` (built as a LearnerGroup
    builds its learners: index set, then build)."""
    config = (TD3Config().environment(observation_space=OBS, action_space=ACT)
              .training(replay_buffer_config={"capacity": 1000}).debugging(seed=seed))
    learner = config.learner_class(config=config)
    learner._set_learner_index_and_placement_group(learner_index=index, placement_group=None)
    learner.build()
    return learner


def test_each_learner_samples_its_own_stream_the_run_seed_plus_its_index():
    """Data-parallel learners must not draw the same rows from their shards;
    a rerun with the same seed draws what the first run drew."""
    def rows(learner):
        learner.add_chunks(chunks(20))
        return learner.replay_sampler.sample(16)[Columns.ACTIONS]
    second = rows(learner_at(2, seed=3))
    assert torch.equal(second, rows(learner_at(0, seed=5)))
    assert not torch.equal(second, rows(learner_at(0, seed=3)))


def test_a_single_learner_holds_the_whole_buffer():
    learner, _ = make_learner()
    assert learner.replay_storage.capacity == 1000
    assert learner.replay_storage.device == torch.device("cpu")


def test_steps_trained_add_up_over_calls_as_rllib_counts_them():
    """Two calls (2 updates, then 1) aggregated as the Algorithm aggregates its
    learners' results: per-call sums, lifetime sums, the mean batch per call,
    and the weights' sequence number, one per call."""
    learner = seeded_learner(0, policy_delay=1000)
    learner.add_chunks(chunks(10))
    run = MetricsLogger(root=True)
    for updates in (2, 1):
        results = learner.update_from_replay(updates)
        run.aggregate([results], key="learners")
    last = {k: v.peek() for k, v in results[MODULE].items()}
    assert last[NUM_MODULE_STEPS_TRAINED] == last[MODULE_TRAIN_BATCH_SIZE_MEAN] == B
    assert last[WEIGHTS_SEQ_NO] == 2
    last = {k: v.peek() for k, v in results[ALL_MODULES].items()}
    assert last[NUM_MODULE_STEPS_TRAINED] == last[NUM_ENV_STEPS_TRAINED] == B
    total = run.reduce()["learners"]
    for key in (MODULE, ALL_MODULES):
        assert total[key][NUM_MODULE_STEPS_TRAINED_LIFETIME].peek() == 3 * B, key
    assert total[ALL_MODULES][NUM_ENV_STEPS_TRAINED_LIFETIME].peek() == 3 * B
    assert total[MODULE]["num_updates_lifetime"].peek() == 3


def test_a_partial_learner_state_holds_only_the_components_asked_for():
    """RLlib asks for parts of the state (a checkpoint's optimizer alone, the
    weights without the module): the delay phase rides along with each."""
    learner, _ = make_learner(policy_delay=3)
    update(learner, batch())
    for state in (learner.get_state(COMPONENT_OPTIMIZER),
                  learner.get_state(not_components=COMPONENT_RL_MODULE)):
        assert COMPONENT_RL_MODULE not in state and COMPONENT_OPTIMIZER in state
        assert state["td3_critic_steps"] == {MODULE: 1}


def test_the_bellman_targets_and_rllibs_loss_hook_are_the_updates_own():
    """bellman_targets (what the critic probes read) is y; RLlib's loss hook
    (compute_losses) is MSE(Q1, y) + MSE(Q2, y) on the module's forward pass."""
    learner, module = make_learner(policy_noise=0.0)
    t = {k: torch.as_tensor(v) for k, v in batch(seed=4, terminated=np.arange(B) % 2 == 0).items()}
    y = hand_targets(module, t)
    torch.testing.assert_close(learner.bellman_targets(MODULE, t), y)
    out = module.forward_train(t)
    losses = learner.compute_losses(fwd_out={MODULE: out}, batch={MODULE: t})
    torch.testing.assert_close(
        losses[MODULE], F.mse_loss(out["q1_preds"], y) + F.mse_loss(out["q2_preds"], y))


def camera_learner(frames, **training):
    space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (frames, 84, 84), np.uint8),
                             "state": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)})
    config = (TD3Config().environment(observation_space=space, action_space=ACT)
              .training(train_batch_size_per_learner=B, actor_hiddens=[16], critic_hiddens=[16],
                        replay_buffer_config={"capacity": 100}, frame_stack=frames, **training)
              .debugging(seed=0))
    return config.build_learner()


def camera_episode(steps, reward):
    """Observation t: every pixel t + 1 (0 is the stack's pad), state (t, 0, 0)."""
    t = np.arange(steps + 1)
    return EpisodeChunk(id="e", obs={
        "image": np.broadcast_to((t + 1).astype(np.uint8)[:, None, None], (steps + 1, 84, 84)).copy(),
        "state": np.stack([t, 0 * t, 0 * t], axis=1).astype(np.float32)},
        actions=np.zeros((steps, 2), np.float32), rewards=np.full(steps, reward, np.float32),
        terminated=True, done=True)


def test_a_camera_learners_shard_stacks_single_frames_and_clips_rewards():
    """The shard keeps one frame per observation and samples the config's
    stack (zero frames before the episode's first); rewards clip at the
    config's reward_clip."""
    learner = camera_learner(3, reward_clip=1.0)
    assert learner.add_chunks([camera_episode(6, reward=5.0)]) == 6
    sample = learner.replay_sampler.sample(32)
    for stack, state in zip(sample[Columns.OBS]["image"], sample[Columns.OBS]["state"]):
        t = int(state[0])
        assert stack.shape == (3, 84, 84)
        assert stack[:, 0, 0].tolist() == [max(0, t - 1), max(0, t), t + 1]
    assert sample[Columns.REWARDS].tolist() == [1.0] * 32


def test_a_learner_without_an_image_encoder_stores_no_images():
    learner = camera_learner(3, image_encoder="none")
    chunk = camera_episode(4, reward=1.0)
    del chunk.obs["image"]
    learner.add_chunks([chunk])
    assert set(learner.replay_sampler.sample(4)[Columns.OBS]) == {"state"}


@pytest.mark.parametrize("learners", [0, 4])
def test_a_shard_that_fills_the_free_memory_exactly_is_allocated_one_byte_more_is_not(
        monkeypatch, learners):
    """The check is capacity x slot bytes against the device's free memory:
    a shard that needs exactly what is free is built; one byte less free
    memory refuses it, naming the largest buffer that fits (a whole slot less
    per learner)."""
    from rllib_av.algorithms.td3 import td3_learner

    shards = max(1, learners)
    per_slot = slot_bytes({BOX_KEY: (OBS.shape, OBS.dtype)}, ACT.shape[0])
    config = (TD3Config().environment(observation_space=OBS, action_space=ACT)
              .training(replay_buffer_config={"capacity": 1000})
              .learners(num_learners=learners))
    shard = 1000 // shards
    monkeypatch.setattr(td3_learner, "device_free_bytes", lambda device: shard * per_slot)
    assert config.build_learner().replay_storage.capacity == shard
    monkeypatch.setattr(td3_learner, "device_free_bytes", lambda device: shard * per_slot - 1)
    with pytest.raises(ConfigError) as e:
        config.build_learner()
    assert str(e.value).endswith(f"expected <= {(shard - 1) * shards}")


def test_a_learner_preallocates_its_shard_on_its_own_device(monkeypatch):
    """The meta device stands in for a GPU learner's; a sampler (whose
    generator cannot live on meta) is not needed to see where the ring is."""
    learner, _ = make_learner()
    learner._device = torch.device("meta")
    monkeypatch.setattr(td3_learner, "TransitionSampler", lambda storage, **settings: None)
    learner._build_replay()
    assert {t.device.type for t in learner.replay_storage.arrays().values()} == {"meta"}
