"""The replay journal (issue 8.2, steps lost after a driver kill: 0): samples
journaled before learning come back on restore, exactly, and only those that
follow the restored checkpoint."""

import os

import numpy as np
import pytest

from rllib_av.replay.episode_chunk import EpisodeChunk
from rllib_av.replay.journal import ReplayJournal

from test_replay_storage import Buffer, episode


def chunks(ep, steps, **kw):
    return [EpisodeChunk.from_episode(episode(ep=ep, steps=steps, **kw))]


def buffer_state(storage):
    """(counters, arrays) of a storage's state."""
    state = storage.get_state()
    return state, state.pop("arrays")


def shard_state(algo):
    """buffer_state of the (only) learner's replay shard, where it lives."""
    results = algo.learner_group.foreach_learner(buffer_state_of_learner)
    return next(iter(results)).get()


def buffer_state_of_learner(learner):
    return buffer_state(learner.replay_storage)


def test_replayed_entries_rebuild_the_buffer_exactly(tmp_path):
    journal = ReplayJournal(str(tmp_path))
    direct = Buffer(64, frame_stack=3, seed=0)
    pieces = [chunks(1, 4), chunks(2, 3, terminated=True), chunks(3, 5, truncated=True)]
    pieces[0][0].rewards[1] = np.nan  # a dropped chunk replays as dropped
    for i, piece in enumerate(pieces):
        journal.append(piece, env_steps_lifetime=10 * (i + 1))
        direct.storage.add_chunks(piece)

    reopened = ReplayJournal(str(tmp_path))
    reopened.restored(0)  # a checkpoint taken before any entry
    replayed = Buffer(64, frame_stack=3, seed=0)
    lifetimes = []
    for piece, lifetime in reopened.replay():
        replayed.storage.add_chunks(piece)
        lifetimes.append(lifetime)
    assert lifetimes == [10, 20, 30]
    assert reopened.head == 3
    (s1, a1), (s2, a2) = buffer_state(direct.storage), buffer_state(replayed.storage)
    assert s1 == s2 and s1["num_nonfinite_dropped"] == 1 and s1["num_transitions_added"] == 8
    assert a1.keys() == a2.keys()
    for key in a1:
        np.testing.assert_array_equal(a1[key], a2[key], err_msg=key)
    batch1, batch2 = direct.sample(16, n_step=2), replayed.sample(16, n_step=2)
    np.testing.assert_array_equal(batch1["obs"]["image"], batch2["obs"]["image"])


def test_replay_follows_the_restored_lineage_only(tmp_path):
    journal = ReplayJournal(str(tmp_path))
    journal.append(chunks(1, 2), 2)      # entry 1
    journal.append(chunks(1, 2), 4)      # entry 2 (a checkpoint at 2 would hold both)
    journal.restored(1)                  # guard rollback to a checkpoint holding entry 1
    journal.append(chunks(2, 2), 4)      # entry 3: follows entry 1, not entry 2

    def replay_after(head):
        j = ReplayJournal(str(tmp_path))
        j.restored(head)
        return [lifetime for _, lifetime in j.replay()], j.head

    assert replay_after(2) == ([], 2)     # entry 3 does not follow entry 2
    assert replay_after(1) == ([4], 3)    # entries 2 and 3 both do: the newer is live
    assert replay_after(0) == ([2, 4], 3)
    assert replay_after(-1) == ([], -1)   # a checkpoint saved without a journal

    # A new entry never reuses an id, even after entries were forgotten.
    j = ReplayJournal(str(tmp_path))
    j.forget_through(2)
    assert sorted(os.listdir(tmp_path)) == ["000000003.npz"]
    j.restored(3)
    j.append(chunks(3, 1), 5)
    assert sorted(os.listdir(tmp_path)) == ["000000003.npz", "000000004.npz"]


def test_new_entries_after_a_resume_follow_the_checkpoint_head(tmp_path):
    """Issue 13.2: a checkpoint deletes the entries it holds; a run resumed from
    it must still number new entries above its head, or a second kill loses them."""
    journal = ReplayJournal(str(tmp_path))
    for steps in (2, 4, 6):
        journal.append(chunks(1, 2), steps)
    journal.forget_through(3)  # the checkpoint holding entries 1-3 is complete
    assert os.listdir(tmp_path) == []

    resumed = ReplayJournal(str(tmp_path))  # the run, resumed after a kill
    resumed.restored(3)
    resumed.append(chunks(2, 2), 8)
    resumed.append(chunks(2, 2), 10)

    again = ReplayJournal(str(tmp_path))  # killed again, resumed again
    again.restored(3)
    assert [lifetime for _, lifetime in again.replay()] == [8, 10]


def test_a_half_written_entry_is_never_read(tmp_path):
    journal = ReplayJournal(str(tmp_path))
    journal.append(chunks(1, 2), 2)
    with open(tmp_path / ".000000002.tmp", "wb") as f:  # the writer died mid-entry
        f.write(b"PK\x03\x04 truncated")
    j = ReplayJournal(str(tmp_path))
    j.restored(0)
    assert [lifetime for _, lifetime in j.replay()] == [2]
    j.append(chunks(1, 1), 3)
    assert "000000002.npz" in os.listdir(tmp_path)


@pytest.mark.usefixtures("ray_local")
def test_restore_plus_journal_tail_recovers_every_step_after_the_checkpoint(tmp_path):
    """A real TD3: checkpoint, train on, drop the algorithm (as a SIGKILL would),
    restore the checkpoint into a new one and replay the journal."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    from rllib_av.algorithms.td3 import TD3Config

    def build():
        config = (TD3Config().environment("Pendulum-v1")
                  .training(num_steps_sampled_before_learning_starts=100,
                            replay_buffer_config={"capacity": 2000},
                            train_batch_size_per_learner=32)
                  .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=0)
                  .rllib_av(replay_journal_dir=str(tmp_path / "journal")))
        config.rollout_fragment_length = 50
        return config.build_algo()

    algo = build()
    try:
        for _ in range(4):
            algo.train()
        ckpt = str(tmp_path / "ckpt")
        algo.save_to_path(ckpt)
        algo.checkpoint_complete(ckpt)
        for _ in range(3):
            result = algo.train()
        steps = result[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME]
        updates = result["learners"]["default_policy"]["num_updates_lifetime"]
        before = shard_state(algo)
    finally:
        algo.stop()
    assert steps == 350 and updates > 0

    resumed = build()
    try:
        resumed.restore_from_path(ckpt)
        assert resumed.num_replay_transitions == 200
        assert shard_state(resumed)[0]["num_transitions_added"] == 200
        assert resumed.replay_journal_tail() == 150
        after = shard_state(resumed)
        assert before[0]["num_transitions_added"] == after[0]["num_transitions_added"] == 350
        for key in before[1]:
            np.testing.assert_array_equal(before[1][key], after[1][key], err_msg=key)
        result = resumed.train()
        # The counters go on from where the killed run stood, the updates the
        # journaled steps owed made again (one per env step here).
        assert result[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME] == steps + 50
        assert result["learners"]["default_policy"]["num_updates_lifetime"] == updates + 50
    finally:
        resumed.stop()
