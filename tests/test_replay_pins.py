"""Replay storage and sampling at their edges, through add / sample / restore
and what the critic probes read: an empty buffer answers in the right types,
a wrapped ring reports only what it still holds, and the memory it declares
is the memory it takes."""

import os
import warnings
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rllib_av.replay.episode_chunk import BOX_KEY, ChunkMeta, EpisodeChunk
from rllib_av.replay.reward_processing import RewardProcessor
from rllib_av.replay.sampling import DISCOUNTS, TransitionSampler
from rllib_av.replay.sharding import ShardAssignment
from rllib_av.replay import storage as storage_module
from rllib_av.replay.storage import (
    ReplayStorage, device_free_bytes, load_state, save_state, slot_bytes,
)


def one_step_episode(i, terminated=True):
    return EpisodeChunk(id=f"e{i}", obs={BOX_KEY: np.full((2, 3), i, np.float32)},
                        actions=np.full((1, 2), i / 10, np.float32),
                        rewards=np.array([float(i)], np.float32),
                        terminated=terminated, done=True)


def test_an_empty_buffer_answers_the_probes_in_their_types():
    storage = ReplayStorage(10)
    assert storage.nbytes() == 0
    rewards, positions = storage.recent_transitions(5)
    assert (rewards.dtype, positions.dtype) == (np.float32, np.int64)
    assert len(rewards) == len(positions) == 0
    terminal = storage.terminal_slots(5)
    assert terminal.dtype == torch.int64 and terminal.shape == (0,)


def test_a_wrapped_ring_reports_only_the_terminal_transitions_it_still_holds():
    """Capacity 6, four one-step episodes (8 observations): the first episode
    is overwritten; the others' first observations sit in slots 2, 4 and 0."""
    storage = ReplayStorage(6)
    storage.add_chunks([one_step_episode(i) for i in range(4)])
    assert storage.oldest == 2
    assert storage.terminal_slots(10).tolist() == [2, 4, 0]
    assert storage.terminal_slots(2).tolist() == [4, 0]  # the newest
    rewards, positions = storage.recent_transitions(10)
    assert rewards.tolist() == [1.0, 2.0, 3.0] and positions.tolist() == [0, 0, 0]
    assert positions.dtype == np.int64


def test_the_declared_slot_size_is_what_a_slot_takes():
    leaves = {BOX_KEY: ((3,), np.float32)}
    storage = ReplayStorage(10)
    storage.allocate(leaves, action_dim=2)
    # + one int64: ``prev`` has a pad row (the pad frame links to itself).
    assert storage.nbytes() == 10 * slot_bytes(leaves, 2) + 8
    assert slot_bytes(leaves, 2) == 12 + 16 + 8 + 4 + 1


def chunk_of(episode, values, done):
    """One chunk of ``episode`` whose observations are ``values``, rewards 1."""
    steps = len(values) - 1
    return EpisodeChunk(id=episode, obs={BOX_KEY: np.array(values, np.float32)[:, None]},
                        actions=np.zeros((steps, 1), np.float32),
                        rewards=np.ones(steps, np.float32), terminated=False, done=done)


def test_a_chunk_never_links_to_an_observation_it_overwrites_itself():
    """Ring of 4: episode A's first chunk (observations 10, 11), then B's three
    steps fill the ring up to A's 11, the oldest one stored. A's next chunk
    (11, 12) would overwrite 11 with 12 while linking 11 -> 12 in that very
    slot: a transition from 12 to itself. It must start afresh instead."""
    storage = ReplayStorage(4)
    storage.add_chunks([chunk_of("A", [10, 11], done=False)])
    storage.add_chunks([chunk_of("B", [20, 21, 22], done=True)])
    assert storage.oldest == 1  # A's 11, still stored when A's next chunk arrives
    storage.add_chunks([chunk_of("A", [11, 12], done=False)])
    sampler = TransitionSampler(storage, gamma=0.9, seed=0)
    batch = sampler.sample(200)
    pairs = set(zip(batch[Columns.OBS][:, 0].tolist(), batch[Columns.NEXT_OBS][:, 0].tolist()))
    assert pairs == {(21.0, 22.0), (11.0, 12.0)}


def test_n_step_returns_stop_at_the_last_stored_observation_and_bootstrap_there():
    """An episode cut by its time limit (truncated: not terminated) or still
    open: the n-step return sums what is stored and bootstraps from the last
    observation, discounted by the steps actually taken."""
    storage = ReplayStorage(20)
    storage.add_chunks([chunk_of("T", [0, 1, 2, 3], done=True),  # truncated
                        chunk_of("O", [10, 11], done=False)])  # open
    sampler = TransitionSampler(storage, gamma=0.5, seed=0)
    batch = sampler.sample(300, n_step=3)
    start = batch[Columns.OBS][:, 0].numpy()
    steps = {0: 3, 1: 2, 2: 1, 10: 1}
    expected_steps = np.array([steps[int(s)] for s in start])
    assert set(start.tolist()) == set(steps)
    assert np.allclose(batch[Columns.REWARDS].numpy(), (1 - 0.5 ** expected_steps) / 0.5)
    assert np.allclose(batch[DISCOUNTS].numpy(), 0.5 ** expected_steps)
    last = np.where(start < 10, 3, 11)
    assert (batch[Columns.NEXT_OBS][:, 0].numpy() == last).all()
    assert not batch[Columns.TERMINATEDS].any()


def test_a_single_stored_transition_is_sampled():
    storage = ReplayStorage(5)
    storage.add_chunks([one_step_episode(7)])
    batch = TransitionSampler(storage, gamma=0.9, seed=0).sample(4)
    assert batch[Columns.REWARDS].tolist() == [7.0] * 4


def test_sampling_defaults_to_one_step_raw_rewards_and_refuses_an_empty_shard():
    storage = ReplayStorage(10)
    storage.allocate({BOX_KEY: ((1,), np.float32)}, action_dim=1)  # as a learner's shard
    sampler = TransitionSampler(storage, gamma=0.5, seed=0)
    with pytest.raises(ValueError) as refused:
        sampler.sample(4)
    assert str(refused.value) == "cannot sample from an empty replay buffer"
    storage.add_chunks([chunk_of("a", [0, 1, 2, 3], done=False)])
    batch = sampler.sample(16)
    assert batch[Columns.REWARDS].tolist() == [1.0] * 16
    assert batch[DISCOUNTS].tolist() == [0.5] * 16
    assert (batch[Columns.NEXT_OBS] == batch[Columns.OBS] + 1).all()
    first = sampler.transitions(torch.tensor([0]))  # the probes' call
    assert (first[Columns.REWARDS].tolist(), first[DISCOUNTS].tolist()) == ([1.0], [0.5])


def test_a_saved_state_goes_into_an_existing_directory_and_comes_back(tmp_path):
    storage = ReplayStorage(8)
    storage.add_chunks([one_step_episode(i) for i in range(3)])
    save_state(storage.get_state(), str(tmp_path))  # the directory exists already
    restored = ReplayStorage(8)
    restored.set_state(load_state(str(tmp_path)))
    assert restored.num_added == 6 and restored.num_transitions_added == 3
    assert torch.equal(restored.obs[BOX_KEY][:6], storage.obs[BOX_KEY][:6])
    assert torch.equal(restored.next[:6], storage.next[:6])
    assert torch.equal(restored.terminated[:6], storage.terminated[:6])
    # Bulk data as one .npy per array, never pickled; an empty buffer saves too.
    files = sorted(os.listdir(tmp_path))
    assert files == sorted(["meta.pkl", "obs__.npy", "prev.npy", "next.npy", "action.npy",
                            "reward.npy", "terminated.npy"])
    with open(tmp_path / "meta.pkl", "rb") as f:
        assert "arrays" not in pickle.load(f)
    save_state(ReplayStorage(8).get_state(), str(tmp_path / "empty"))
    assert "arrays" not in load_state(str(tmp_path / "empty"))


def test_the_return_scale_is_one_over_the_std_of_the_clipped_discounted_returns():
    """gamma 0.5, clip 2: episode a brings rewards 1, 3 (clipped: 2), then 1
    and ends; b brings -1. Running returns 1, 2.5, 2.25 (a continues from its
    2.5) and -1; the scale is one over their sample standard deviation."""
    proc = RewardProcessor(gamma=0.5, clip=2.0, scale_by_return_std=True)
    proc.observe("a", np.array([1.0, 3.0]), done=False)
    proc.observe("b", np.array([-1.0]), done=True)
    proc.observe("a", np.array([1.0]), done=True)
    proc.observe("c", np.array([]), done=False)  # nothing arrived: nothing counted
    assert proc.scale == pytest.approx(1 / np.std([1.0, 2.5, -1.0, 2.25], ddof=1))
    restored = RewardProcessor(gamma=0.5, clip=2.0, scale_by_return_std=True)
    restored.set_state(proc.get_state())
    assert restored.scale == proc.scale
    # An episode left open keeps its running return through a restore.
    proc.observe("d", np.array([4.0]), done=False)
    restored.set_state(proc.get_state())
    for p in (proc, restored):
        p.observe("d", np.array([0.0]), done=True)  # 0.5 * 2 + 0
    assert restored.scale == proc.scale == pytest.approx(
        1 / np.std([1.0, 2.5, -1.0, 2.25, 2.0, 1.0], ddof=1))


def test_without_return_scaling_nothing_is_tracked():
    proc = RewardProcessor(gamma=0.9, scale_by_return_std=False)
    proc.observe("a", np.array([5.0, -5.0, 7.0]), done=False)
    assert proc.scale == 1.0
    assert proc.get_state() == {"count": 0, "mean": 0.0, "m2": 0.0, "returns": {}}


def test_what_the_driver_keeps_of_a_chunk():
    chunk = one_step_episode(3)
    assert chunk.meta() == ChunkMeta("e3", chunk.rewards, True, True)
    bad = chunk_of("x", [0.0, float("nan")], done=False)
    assert bad.meta() == ChunkMeta("x", bad.rewards, False, False)


def test_a_shard_of_another_size_is_refused_by_name():
    storage = ReplayStorage(10)
    storage.add_chunks([one_step_episode(1)])
    with pytest.raises(ValueError) as refused:
        ReplayStorage(20).set_state(storage.get_state())
    assert str(refused.value) == (
        "replay buffer: the saved shard holds 10 slots, this one 20; keep "
        "training.buffer_size and resources.num_learners unchanged to resume")


def dict_chunk(i):
    return EpisodeChunk(id=f"d{i}", obs={"image": np.full((2, 4, 4), i, np.uint8),
                                         "state": np.full((2, 2), i, np.float32)},
                        actions=np.zeros((1, 2), np.float32), rewards=np.ones(1, np.float32),
                        terminated=True, done=True)


def test_a_preallocated_shard_takes_a_saved_state_whole():
    """The learner allocates its shard at build, before any checkpoint is
    loaded into it: the loaded state's counters and observation kind win,
    whatever leaves the shard was allocated with."""
    saved = ReplayStorage(10, padded_keys={"image"})
    saved.add_chunks([dict_chunk(1), dict_chunk(2),
                      EpisodeChunk(id="nan", obs={"image": np.zeros((2, 4, 4), np.uint8),
                                                  "state": np.full((2, 2), np.nan, np.float32)},
                                   actions=np.zeros((1, 2), np.float32),
                                   rewards=np.ones(1, np.float32), terminated=True, done=True)])
    for leaves in ({"image": ((4, 4), np.uint8), "state": ((2,), np.float32)},
                   {"other": ((3,), np.float32)}):
        shard = ReplayStorage(10, padded_keys={"image"})
        shard.allocate(leaves, action_dim=2)
        shard.set_state(saved.get_state())
        assert shard.num_nonfinite_dropped == 1 and shard.num_transitions_added == 2
        obs = TransitionSampler(shard, gamma=0.9, frame_stack=2, seed=0).sample(8)[Columns.OBS]
        assert set(obs) >= {"image", "state"}
        assert set(obs["state"][:, 0].tolist()) == {1.0, 2.0}


def test_one_learner_holds_one_shard_and_a_resume_names_what_to_keep():
    dealt = ShardAssignment(1).deal([one_step_episode(i) for i in range(3)])
    assert [[c.id for c in shard] for shard in dealt] == [["e0", "e1", "e2"]]
    assert len(ShardAssignment(0).transitions) == 1
    with pytest.raises(ValueError) as refused:
        ShardAssignment(1).set_state(ShardAssignment(2).get_state())
    assert str(refused.value) == ("replay buffer: saved in 2 shards, this run has 1; keep "
                                  "resources.num_learners unchanged to resume")


def test_return_scaling_is_off_unless_asked_for():
    proc = RewardProcessor(gamma=0.9)
    proc.observe("a", np.array([1.0, 5.0, -3.0]), done=True)
    assert proc.scale == 1.0


def test_batches_default_to_one_step_raw_rewards_and_never_gather_less_than_one(monkeypatch):
    from rllib_av.replay import sampling

    storage = ReplayStorage(20)
    storage.add_chunks([chunk_of("a", [0, 1, 2, 3, 4], done=False)])
    sampler = TransitionSampler(storage, gamma=0.5, seed=0)
    (batch,) = sampler.batches(1, 6)
    assert batch[Columns.REWARDS].tolist() == [1.0] * 6
    assert batch[DISCOUNTS].tolist() == [0.5] * 6
    (scaled,) = sampler.batches(1, 6, reward_scale=3.0)
    assert scaled[Columns.REWARDS].tolist() == [3.0] * 6
    # A batch bigger than GATHER_BYTES: one batch a gather, not none and not two.
    monkeypatch.setattr(sampling, "GATHER_BYTES", 1)
    gathered = []
    sample = sampler.sample
    monkeypatch.setattr(sampler, "sample", lambda n, *a: gathered.append(n) or sample(n, *a))
    assert len(list(sampler.batches(3, 4))) == 3
    assert gathered == [4, 4, 4]


def test_a_dropped_chunk_cuts_its_episode_and_stores_nothing():
    """Episode A's second chunk holds a NaN: dropped (0 transitions stored,
    counted), and A's third chunk starts afresh instead of linking A's last
    stored observation 1 to its own 3 across the gap."""
    storage = ReplayStorage(20)
    nan_a = chunk_of("A", [1, float("nan")], done=False)
    nan_b = chunk_of("B", [float("nan"), 5], done=True)
    assert storage.add_chunks([chunk_of("A", [0, 1], done=False)]) == 1
    assert storage.add_chunks([nan_a]) == 0
    assert storage.add_chunks([nan_b]) == 0
    assert storage.num_nonfinite_dropped == 2
    assert storage.add_chunks([chunk_of("A", [2, 3], done=False)]) == 1
    batch = TransitionSampler(storage, gamma=0.9, seed=0).sample(100)
    pairs = set(zip(batch[Columns.OBS][:, 0].tolist(), batch[Columns.NEXT_OBS][:, 0].tolist()))
    assert pairs == {(0.0, 1.0), (2.0, 3.0)}


@pytest.mark.parametrize("terminated, truncated", [(False, False), (False, True), (True, False)])
def test_a_box_episode_becomes_a_float32_chunk_that_says_how_it_ends(terminated, truncated):
    """An env's float64 actions and Python float rewards cross the network as
    float32; a Box observation is the one leaf BOX_KEY."""
    space = gym.spaces.Box(-1, 1, (3,), np.float32)
    ep = SingleAgentEpisode(observation_space=space,
                            action_space=gym.spaces.Box(-1, 1, (2,), np.float32))
    ep.add_env_reset(np.zeros(3, np.float32))
    for t in (1, 2):
        ep.add_env_step(np.full(3, t, np.float32), np.array([t, -t]) / 10, t / 4,
                        terminated=terminated and t == 2, truncated=truncated and t == 2)
    chunk = EpisodeChunk.from_episode(ep)
    assert list(chunk.obs) == [BOX_KEY]
    np.testing.assert_array_equal(chunk.obs[BOX_KEY], [[0, 0, 0], [1, 1, 1], [2, 2, 2]])
    assert chunk.actions.dtype == chunk.rewards.dtype == np.float32
    np.testing.assert_allclose(chunk.actions, [[0.1, -0.1], [0.2, -0.2]])
    np.testing.assert_allclose(chunk.rewards, [0.25, 0.5])
    assert (chunk.terminated, chunk.done) == (terminated, terminated or truncated)


def test_a_chunk_links_to_an_observation_that_stays_the_oldest_stored():
    """Ring of 4 holding A's 10, 11 and B's 20, 21: A's next chunk (11, 12)
    writes 12 over 10, and 11, then the oldest stored, is still there to link
    to: 11 is not stored a second time."""
    storage = ReplayStorage(4)
    storage.add_chunks([chunk_of("A", [10, 11], done=False), chunk_of("B", [20, 21], done=True)])
    storage.add_chunks([chunk_of("A", [11, 12], done=False)])
    assert storage.num_added == 5 and storage.oldest == 1
    batch = TransitionSampler(storage, gamma=0.9, seed=0).sample(100)
    pairs = set(zip(batch[Columns.OBS][:, 0].tolist(), batch[Columns.NEXT_OBS][:, 0].tolist()))
    assert pairs == {(20.0, 21.0), (11.0, 12.0)}


def test_a_read_only_chunk_is_stored_without_a_warning():
    """Chunks read straight out of Ray's object store are read-only arrays."""
    chunk = chunk_of("a", [0, 1, 2], done=True)
    for array in (chunk.obs[BOX_KEY], chunk.actions, chunk.rewards):
        array.flags.writeable = False
    storage = ReplayStorage(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert storage.add_chunks([chunk]) == 2
    assert storage.obs[BOX_KEY][:3, 0].tolist() == [0.0, 1.0, 2.0]
    assert storage.reward[:2].tolist() == [1.0, 1.0]


def test_rewards_are_clipped_at_both_ends():
    storage = ReplayStorage(10)
    storage.add_chunks([EpisodeChunk(id="a", obs={BOX_KEY: np.zeros((3, 1), np.float32)},
                                     actions=np.zeros((2, 1), np.float32),
                                     rewards=np.array([-5.0, 5.0], np.float32),
                                     terminated=True, done=True)])
    sampler = TransitionSampler(storage, gamma=0.9, reward_clip=2.0, seed=0)
    assert set(sampler.sample(50)[Columns.REWARDS].tolist()) == {-2.0, 2.0}
    proc = RewardProcessor(gamma=0.9, clip=2.0)
    assert proc.process(np.array([-5.0, 0.5, 5.0])).tolist() == [-2.0, 0.5, 2.0]


def _host_meminfo(monkeypatch, tmp_path, text):
    """The storage module reads ``text`` as /proc/meminfo."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(text)
    real_open = open
    monkeypatch.setattr(storage_module, "open",
                        lambda path, *a: real_open(meminfo if path == "/proc/meminfo" else path, *a),
                        raising=False)


def test_a_cpu_learner_counts_the_hosts_available_memory(monkeypatch, tmp_path):
    """MemAvailable (page cache included), not MemFree: a buffer that fits once
    the cache is reclaimed is not refused."""
    _host_meminfo(monkeypatch, tmp_path,
                  "MemTotal: 9000 kB\nMemFree: 1000 kB\nMemAvailable: 5000 kB\n")
    assert device_free_bytes(torch.device("cpu")) == 5000 * 1024


def test_without_memavailable_the_free_memory_is_the_available_pages(monkeypatch, tmp_path):
    """Kernels before 3.14 have no MemAvailable: the available physical pages
    times the page size."""
    _host_meminfo(monkeypatch, tmp_path, "MemTotal: 9000 kB\nMemFree: 1000 kB\n")
    monkeypatch.setattr(storage_module.os, "sysconf",
                        {"SC_AVPHYS_PAGES": 300, "SC_PAGE_SIZE": 4096}.__getitem__)
    assert device_free_bytes(torch.device("cpu")) == 300 * 4096


def test_a_camera_shard_keeps_its_frames_as_bytes_and_takes_what_it_declares():
    """uint8 frames stay uint8 in the shard (4x less memory than float32):
    each slot takes slot_bytes, the image leaf alone has one more (the pad
    frame) and ``prev`` its pad row."""
    leaves = {"image": ((4, 4), np.uint8), "state": ((2,), np.float32)}
    storage = ReplayStorage(10, padded_keys={"image"})
    storage.allocate(leaves, action_dim=2)
    assert storage.obs["image"].dtype == torch.uint8
    assert storage.obs["state"].dtype == torch.float32
    assert storage.nbytes() == 10 * slot_bytes(leaves, 2) + 16 + 8
    storage.add_chunks([dict_chunk(3)])
    obs = TransitionSampler(storage, gamma=0.9, frame_stack=2, seed=0).sample(2)[Columns.OBS]
    assert obs["image"].dtype == torch.uint8 and obs["image"][:, :, 0, 0].tolist() == [[0, 3]] * 2


def test_a_box_shard_restored_from_a_state_saved_before_any_data_stays_a_box_shard():
    """A checkpoint taken before the first chunk arrived holds no arrays: the
    learner's preallocated Box shard that loads it keeps answering with
    tensors, not with a dict of leaves."""
    shard = ReplayStorage(10)
    shard.allocate({BOX_KEY: ((3,), np.float32)}, action_dim=2)
    shard.set_state(ReplayStorage(10).get_state())
    shard.add_chunks([one_step_episode(4)])
    obs = TransitionSampler(shard, gamma=0.9, seed=0).sample(2)[Columns.OBS]
    assert isinstance(obs, torch.Tensor) and obs.tolist() == [[4.0] * 3] * 2


def test_a_dropped_chunk_names_the_parts_that_held_nan_or_inf():
    """What the driver counts under nonfinite_total{where}: the observation,
    the reward, both or neither; an integer image leaf cannot hold NaN and is
    not asked."""
    def chunk(obs, reward):
        return EpisodeChunk(id="c", obs={"image": np.zeros((2, 2, 2), np.uint8),
                                         "state": np.array([[0.0], [obs]], np.float32)},
                            actions=np.zeros((1, 1), np.float32),
                            rewards=np.array([reward], np.float32), terminated=True, done=True)
    nan, inf = float("nan"), float("inf")
    cases = {(0.0, 1.0): (), (nan, 1.0): ("obs",), (0.0, -inf): ("reward",),
             (inf, nan): ("obs", "reward")}
    for (obs, reward), parts in cases.items():
        c = chunk(obs, reward)
        assert c.obs_finite() is (obs == 0.0) and c.is_finite() is (parts == ())
        assert c.meta().nonfinite_parts() == parts, (obs, reward)


def test_a_sampler_stacks_one_frame_unless_told_otherwise():
    storage = ReplayStorage(10, padded_keys={"image"})
    storage.add_chunks([dict_chunk(5)])
    sampler = TransitionSampler(storage, gamma=0.9, seed=0)
    assert sampler.sample(2)[Columns.OBS]["image"].shape == (2, 1, 4, 4)
    assert sampler.transition_bytes() == 2 * (16 + 8) + 2 * 4 + 4 + 1 + 4


def test_every_ring_tensor_lives_on_the_storage_device():
    """A GPU learner's ring must sit on the GPU whole (a CPU tensor there makes
    every sample cross the bus). The meta device holds no memory and needs no
    GPU, and a tensor created without a device lands on the CPU, not there."""
    storage = ReplayStorage(8, device="meta", padded_keys=["image"])
    storage.allocate({"image": ((3, 4, 4), np.uint8), "state": ((5,), np.float32)}, action_dim=2)
    assert {k: t.device.type for k, t in storage.arrays().items()} == dict.fromkeys(
        ["obs/image", "obs/state", "prev", "next", "action", "reward", "terminated"], "meta")


def test_the_ring_keeps_its_dtypes_under_a_float64_default():
    """Actions and rewards are stored as float32 whatever torch's default dtype
    (a float64 default would double them and hand the critic float64 batches)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        storage = ReplayStorage(8)
        storage.allocate({"image": ((3, 4, 4), np.uint8), "state": ((5,), np.float32)},
                         action_dim=2)
    finally:
        torch.set_default_dtype(default)
    assert {k: t.dtype for k, t in storage.arrays().items()} == {
        "obs/image": torch.uint8, "obs/state": torch.float32, "prev": torch.int64,
        "next": torch.int64, "action": torch.float32, "reward": torch.float32,
        "terminated": torch.bool}


def test_a_shard_answers_the_same_whatever_torchs_default_device():
    """Every tensor the replay makes goes on the shard's own device, named, not
    on torch's default one (a learner process may set ``torch.set_default_device``;
    a GPU shard whose sampling made CPU tensors would copy every batch across
    the bus). Here the shard is on the CPU and the default device is ``meta``:
    a tensor made without the shard's device lands there, and mixing it with
    the shard's fails or leaves a meta tensor in the answers."""
    def answers():
        empty = ReplayStorage(6, padded_keys={"image"})
        storage = ReplayStorage(6, padded_keys={"image"})
        storage.add_chunks([dict_chunk(i) for i in range(4)])
        batch = TransitionSampler(storage, gamma=0.9, frame_stack=2, seed=0).sample(8, n_step=2)
        return {"empty terminal slots": empty.terminal_slots(4),
                "terminal slots": storage.terminal_slots(4), **batch}

    expected = answers()
    with torch.device("meta"):
        got = answers()
    assert set(got) == set(expected)
    for key, value in expected.items():
        for leaf, want in (value.items() if isinstance(value, dict) else [("", value)]):
            have = got[key][leaf] if leaf else got[key]
            assert have.device == want.device == torch.device("cpu"), (key, leaf)
            assert torch.equal(have, want), (key, leaf)


def test_a_gpu_learner_counts_the_free_memory_of_its_own_gpu(monkeypatch):
    """``torch.cuda.mem_get_info`` faked (no GPU here): the free bytes of the
    shard's GPU, not the current GPU's and not its total."""
    asked = []
    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda device=None: asked.append(device) or (3 * 2**30, 80 * 2**30))
    assert device_free_bytes(torch.device("cuda", 1)) == 3 * 2**30
    assert asked == [torch.device("cuda", 1)]


class _WritesOnTheWrittenDevice(TorchDispatchMode):
    """What a GPU enforces and the meta device does not: the values of an index
    write sit on the written tensor's device (a 0-dim scalar aside)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.index_put_.default:
            target, values = args[0], args[2]
            assert values.device == target.device or values.dim() == 0, (
                f"{func}: values on {values.device}, written tensor on {target.device}")
        return func(*args, **(kwargs or {}))


def test_chunks_reach_a_shard_on_another_device_before_they_are_written():
    """A GPU shard refuses CPU values; meta stands in for the GPU here."""
    storage = ReplayStorage(8, device="meta", padded_keys={"image"})
    with _WritesOnTheWrittenDevice():
        storage.add_chunks([dict_chunk(i) for i in range(4)])
    assert storage.num_transitions_added == 4


def test_the_sampler_draws_with_a_generator_on_the_shards_device(monkeypatch):
    """A GPU shard's draws need a GPU generator (a CPU one is refused there);
    no generator can be made on meta, so the test asks which one is made."""
    made, real = [], torch.Generator
    monkeypatch.setattr(torch, "Generator", lambda device: made.append(device) or real())
    TransitionSampler(ReplayStorage(8, device="meta"), gamma=0.9, seed=0)
    assert made == [torch.device("meta")]
