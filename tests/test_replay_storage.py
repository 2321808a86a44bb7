"""Replay storage and sampling (torch tensors, here on the CPU) against real
RLlib SingleAgentEpisode chunks."""

import gymnasium as gym
import numpy as np
import pytest
import torch
import tree

from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rllib_av.replay.episode_chunk import EpisodeChunk
from rllib_av.replay.reward_processing import RewardProcessor
from rllib_av.replay.sampling import DISCOUNTS, TransitionSampler
from rllib_av.replay.sharding import ShardAssignment
from rllib_av.replay.storage import ReplayStorage, slot_bytes

DICT_OBS = gym.spaces.Dict({
    "image": gym.spaces.Box(0, 255, (4, 4), np.uint8),
    "state": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
})
ACT = gym.spaces.Box(-1, 1, (2,), np.float32)


def obs(t, ep):
    """Observation t of episode ep, its values identifying it."""
    return {"image": np.full((4, 4), 10 * ep + t, np.uint8),
            "state": np.array([ep, t], np.float32)}


def episode(ep, steps, terminated=False, truncated=False, start=0, prev=None, reward=None):
    """A chunk of `steps` env steps; continues `prev` (RLlib's cut) when given."""
    e = prev.cut(len_lookback_buffer=3) if prev is not None else SingleAgentEpisode(
        observation_space=DICT_OBS, action_space=ACT)
    if prev is None:
        e.add_env_reset(obs(start, ep))
    for t in range(start + 1, start + steps + 1):
        last = t == start + steps
        e.add_env_step(obs(t, ep), np.array([t / 100, -t / 100], np.float32),
                       float(t) if reward is None else reward,
                       terminated=terminated and last, truncated=truncated and last)
    return e


class Buffer:
    """Storage + sampler as the learner holds them; batches come back as numpy."""

    def __init__(self, capacity, frame_stack=1, gamma=0.99, reward_clip=None, seed=0):
        self.storage = ReplayStorage(capacity, padded_keys={"image"})
        self.sampler = TransitionSampler(self.storage, gamma=gamma, frame_stack=frame_stack,
                                         reward_clip=reward_clip, seed=seed)

    def add_episodes(self, episodes):
        return self.storage.add_chunks([EpisodeChunk.from_episode(e) for e in episodes])

    def sample(self, n, n_step=1, reward_scale=1.0):
        batch = self.sampler.sample(n, n_step, reward_scale)
        return tree.map_structure(lambda t: t.cpu().numpy(), batch)


def frames_of(stack):
    """Episode-step ids of a (B, F, 4, 4) image stack."""
    return stack[:, :, 0, 0].astype(int)


def test_transitions_round_trip_with_frame_stacks_and_zero_padding():
    buf = Buffer(100, frame_stack=4, gamma=0.9, seed=0)
    buf.add_episodes([episode(ep=1, steps=6, terminated=True)])
    b = buf.sample(500)
    t = b[Columns.OBS]["state"][:, 1].astype(int)
    assert set(t) == set(range(6))  # obs 6 is final: starts no transition
    assert (b[Columns.NEXT_OBS]["state"][:, 1] == t + 1).all()
    assert np.allclose(b[Columns.ACTIONS][:, 0], (t + 1) / 100)
    assert np.allclose(b[Columns.REWARDS], t + 1)
    assert (b[Columns.TERMINATEDS] == (t == 5)).all()
    # Stacks: oldest first, zero frames before the episode start (as RLlib pads).
    for row, ti in zip(frames_of(b[Columns.OBS]["image"]), t):
        expected = [10 + k if k >= 0 else 0 for k in range(ti - 3, ti + 1)]
        assert row.tolist() == expected


def test_truncated_episode_bootstraps_and_terminated_does_not():
    buf = Buffer(100, gamma=0.9, seed=0)
    buf.add_episodes([episode(ep=1, steps=3, truncated=True), episode(ep=2, steps=3, terminated=True)])
    b = buf.sample(400)
    last = b[Columns.OBS]["state"][:, 1] == 2
    ep2 = b[Columns.OBS]["state"][:, 0] == 2
    assert not b[Columns.TERMINATEDS][last & ~ep2].any()
    assert b[Columns.TERMINATEDS][last & ep2].all()
    assert np.allclose(b[DISCOUNTS], 0.9)


def test_chunks_continue_across_cuts_and_interleave_between_runners():
    buf = Buffer(100, frame_stack=4, seed=0)
    a1, b1 = episode(ep=1, steps=2), episode(ep=2, steps=2)
    a2 = episode(ep=1, steps=3, start=2, prev=a1)
    b2 = episode(ep=2, steps=1, start=2, prev=b1, terminated=True)
    buf.add_episodes([a1, b1])
    buf.add_episodes([b2, a2])
    # Each observation stored once: (2+1) + (2+1) + 3 + 1.
    assert buf.storage.num_added == 10
    b = buf.sample(1000)
    ep, t = b[Columns.OBS]["state"][:, 0].astype(int), b[Columns.OBS]["state"][:, 1].astype(int)
    assert (b[Columns.NEXT_OBS]["state"][:, 0] == ep).all()
    assert (b[Columns.NEXT_OBS]["state"][:, 1] == t + 1).all()
    for row, e, ti in zip(frames_of(b[Columns.OBS]["image"]), ep, t):
        assert row.tolist() == [10 * e + k if k >= 0 else 0 for k in range(ti - 3, ti + 1)]
    assert set(zip(ep, t)) == {(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1), (2, 2)}


def test_n_step_returns_stop_at_episode_end():
    buf = Buffer(100, gamma=0.5, seed=0)
    buf.add_episodes([episode(ep=1, steps=4, terminated=True, reward=1.0)])
    b = buf.sample(400, n_step=3)
    t = b[Columns.OBS]["state"][:, 1].astype(int)
    steps = np.minimum(3, 4 - t)
    assert np.allclose(b[Columns.REWARDS], (1 - 0.5 ** steps) / (1 - 0.5))
    assert np.allclose(b[DISCOUNTS], 0.5 ** steps)
    assert (b[Columns.NEXT_OBS]["state"][:, 1] == t + steps).all()
    assert (b[Columns.TERMINATEDS] == (t + steps == 4)).all()


def test_ring_overwrites_oldest_and_stays_consistent():
    buf = Buffer(16, frame_stack=4, seed=0)
    prev = None
    for k in range(10):
        prev = episode(ep=1, steps=3, start=3 * k, prev=prev)
        buf.add_episodes([prev])
    assert len(buf.storage) == 16
    b = buf.sample(500)
    t = b[Columns.OBS]["state"][:, 1].astype(int)
    assert t.min() >= 31 - 16
    assert (b[Columns.NEXT_OBS]["state"][:, 1] == t + 1).all()
    stacks = frames_of(b[Columns.OBS]["image"])
    assert (np.diff(stacks, axis=1) >= 0).all()  # never a frame from the future or pad mid-stack
    assert (stacks[:, -1] == (10 + t) % 256).all()


def test_nonfinite_chunks_never_enter_the_buffer():
    buf = Buffer(100, seed=0)
    bad = episode(ep=1, steps=3, reward=float("nan"))
    buf.add_episodes([bad, episode(ep=2, steps=3, terminated=True)])
    assert buf.storage.num_nonfinite_dropped == 1
    b = buf.sample(200)
    assert (b[Columns.OBS]["state"][:, 0] == 2).all()
    assert np.isfinite(b[Columns.REWARDS]).all()


def test_reward_clipping_and_scaling_apply_at_sample_time_only():
    proc = RewardProcessor(gamma=0.9, clip=2.0, scale_by_return_std=True)
    buf = Buffer(100, gamma=0.9, reward_clip=2.0, seed=0)
    ep = episode(ep=1, steps=6, terminated=True)  # rewards 1..6
    buf.add_episodes([ep])
    proc.observe(ep.id_, ep.get_rewards(), True)  # the driver's statistics
    assert buf.storage.reward[:6].tolist() == [1, 2, 3, 4, 5, 6]  # raw in the storage
    b = buf.sample(300, reward_scale=proc.scale)
    assert 0 < proc.scale < 1e6 and proc.scale != 1.0
    assert np.allclose(np.unique(b[Columns.REWARDS]), np.array([1.0, 2.0]) * proc.scale)
    # The driver's processor and the learner's sampler agree on training units.
    assert np.allclose(proc.process(np.arange(1.0, 7.0)), np.minimum(np.arange(1, 7), 2) * proc.scale)


def test_state_round_trip():
    buf = Buffer(50, frame_stack=4, seed=3)
    first = episode(ep=1, steps=5)
    buf.add_episodes([first])
    state = buf.storage.get_state()
    assert len(state["arrays"]["obs/image"]) == len(buf.storage) == 6  # filled slots only
    restored = Buffer(50, frame_stack=4, seed=99)
    restored.storage.set_state(state)
    restored.sampler.set_state(buf.sampler.get_state())
    a, b = buf.sample(64), restored.sample(64)
    assert np.array_equal(a[Columns.OBS]["image"], b[Columns.OBS]["image"])
    # The open episode continues after restore.
    restored.add_episodes([episode(ep=1, steps=2, start=5, prev=first)])
    assert restored.storage.num_added == 6 + 2


def test_memory_per_image_transition_is_one_frame():
    buf = Buffer(1000, frame_stack=4)
    full = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (84, 84), np.uint8),
                            "state": gym.spaces.Box(-np.inf, np.inf, (23,), np.float32)})
    e = SingleAgentEpisode(observation_space=full, action_space=ACT)
    e.add_env_reset(full.sample())
    e.add_env_step(full.sample(), ACT.sample(), 0.0, terminated=True)
    buf.add_episodes([e])
    per_slot = buf.storage.nbytes() / buf.storage.capacity
    assert 84 * 84 <= per_slot <= 8 * 1024
    leaves = {"image": ((84, 84), np.uint8), "state": ((23,), np.float32)}
    assert slot_bytes(leaves, 2) == pytest.approx(per_slot, abs=8)  # + the pad row
    # A state-only encoder: no frame is shipped, stored or checkpointed.
    chunk = EpisodeChunk.from_episode(e, leaves={"state"})
    assert set(chunk.obs) == {"state"}
    assert slot_bytes({"state": leaves["state"]}, 2) < 150


def test_empty_buffer_refuses_to_sample():
    with pytest.raises(ValueError, match="empty"):
        Buffer(10).sample(4)


def test_recent_transitions_know_their_episode_step():
    buf = Buffer(100)
    a1 = episode(ep=1, steps=3)
    buf.add_episodes([a1, episode(ep=2, steps=2, terminated=True)])
    buf.add_episodes([episode(ep=1, steps=2, start=3, prev=a1, terminated=True)])
    rewards, positions = buf.storage.recent_transitions(100)
    # In storage order: ep 1 steps 0-3 (obs 3 links to the next chunk), ep 2
    # steps 0-1, ep 1 step 4; rewards are t + 1. A window that cuts an episode
    # counts from its first observation in the window.
    assert positions.tolist() == [0, 1, 2, 3, 0, 1, 4]
    assert rewards.tolist() == [1, 2, 3, 4, 1, 2, 5]
    assert buf.storage.recent_transitions(3)[1].tolist() == [0]
    terminal = buf.sampler.transitions(buf.storage.terminal_slots(10))
    assert sorted(terminal[Columns.OBS]["state"][:, 0].tolist()) == [1, 2]
    assert terminal[Columns.TERMINATEDS].all()


def test_shards_keep_episodes_whole_and_fill_evenly():
    shards = ShardAssignment(2)
    long1, short = episode(ep=1, steps=10), episode(ep=2, steps=2, terminated=True)
    dealt = shards.deal([EpisodeChunk.from_episode(e) for e in (long1, short)])
    assert [[c.id for c in s] for s in dealt] == [[long1.id_], [short.id_]]
    # ep 1 continues on shard 0; the next new episode goes to the emptier shard 1.
    more = [EpisodeChunk.from_episode(episode(ep=1, steps=3, start=10, prev=long1)),
            EpisodeChunk.from_episode(episode(ep=3, steps=4))]
    dealt = shards.deal(more)
    assert [[c.id for c in s] for s in dealt] == [[more[0].id], [more[1].id]]
    assert shards.transitions == [13, 6]
    restored = ShardAssignment(2)
    restored.set_state(shards.get_state())
    assert restored.deal([more[1]])[1] == [more[1]]  # open episodes stay where they were
    with pytest.raises(ValueError, match="num_learners"):
        ShardAssignment(3).set_state(shards.get_state())


def test_batches_come_in_gathers_bounded_in_bytes(monkeypatch):
    from rllib_av.replay import sampling

    buf = Buffer(100, frame_stack=4)
    buf.add_episodes([episode(ep=1, steps=20)])
    per = buf.sampler.transition_bytes()
    assert per == 2 * (4 * 16 + 8) + 8 + 9  # 4-frame stacks of 4x4 + 2 floats, obs and next
    monkeypatch.setattr(sampling, "GATHER_BYTES", 3 * 8 * per)  # three batches of 8 a gather
    gathered = []
    sample = buf.sampler.sample
    monkeypatch.setattr(buf.sampler, "sample", lambda n, *a: gathered.append(n) or sample(n, *a))
    batches = list(buf.sampler.batches(7, 8))
    assert gathered == [24, 24, 8]
    assert len(batches) == 7 and all(len(b[Columns.REWARDS]) == 8 for b in batches)
    assert all(b[Columns.OBS]["image"].shape == (8, 4, 4, 4) for b in batches)


def test_observations_are_stored_in_the_space_dtype():
    storage = ReplayStorage(10)
    storage.allocate({"": ((2,), np.float32)}, action_dim=1)
    chunk = EpisodeChunk(id="a", obs={"": np.ones((3, 2), np.float64)},  # an env's float64
                         actions=np.zeros((2, 1), np.float32), rewards=np.ones(2, np.float32),
                         terminated=True, done=True)
    assert storage.add_chunks([chunk]) == 2
    assert storage.obs[""].dtype == torch.float32 and storage.obs[""][:3].sum() == 6
