"""DrQ random shifts: what they do to a stack, and that the learner applies them
to obs and next_obs of every gradient step's batch (and only with an image encoder)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from rllib_av.algorithms.td3 import TD3Config
from rllib_av.algorithms.td3.augmentation import PAD, random_shift, random_shift_obs
from rllib_av.algorithms.td3.td3_learner import DISCOUNTS, TD3TorchLearner

B, FRAMES, SIZE = 6, 3, 84
OBS = gym.spaces.Dict({
    "image": gym.spaces.Box(0, 255, (FRAMES, SIZE, SIZE), np.uint8),
    "state": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
})
ACT = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def images(n=B, seed=0):
    return torch.as_tensor(np.random.default_rng(seed).integers(0, 256, (n, FRAMES, SIZE, SIZE),
                                                                dtype=np.uint8))


def shift_of(original: np.ndarray, shifted: np.ndarray):
    """The (dy, dx) in [-PAD, PAD]^2 with shifted = edge-padded original cropped
    at (PAD + dy, PAD + dx); None if there is none."""
    padded = np.pad(original, ((0, 0), (PAD, PAD), (PAD, PAD)), mode="edge")
    for dy in range(-PAD, PAD + 1):
        for dx in range(-PAD, PAD + 1):
            crop = padded[:, PAD + dy:PAD + dy + SIZE, PAD + dx:PAD + dx + SIZE]
            if np.array_equal(crop, shifted):
                return dy, dx
    return None


def test_each_stack_is_one_edge_replicated_shift_of_itself():
    x = images(64)
    y = random_shift(x, generator=torch.Generator().manual_seed(0))
    assert y.dtype == torch.uint8 and y.shape == x.shape
    # Each (dy, dx) is found for the whole stack at once: all frames moved together.
    shifts = [shift_of(a, b) for a, b in zip(x.numpy(), y.numpy())]
    assert None not in shifts
    assert len(set(shifts)) > 20  # per-sample shifts, not one for the batch


def test_shifts_cover_every_offset_uniformly():
    x = images(1).expand(4000, -1, -1, -1).contiguous()
    y = random_shift(x, generator=torch.Generator().manual_seed(1))
    counts = {}
    for a in y.numpy()[:, :1]:
        s = shift_of(x.numpy()[0, :1], a)
        counts[s] = counts.get(s, 0) + 1
    assert len(counts) == (2 * PAD + 1) ** 2
    expected = 4000 / (2 * PAD + 1) ** 2
    assert max(counts.values()) < 2 * expected and min(counts.values()) > expected / 2


def test_obs_and_next_obs_are_shifted_independently_and_nothing_else_changes():
    x = images()
    batch = {Columns.OBS: {"image": x, "state": torch.zeros(B, 3)},
             Columns.NEXT_OBS: {"image": x.clone(), "state": torch.ones(B, 3)},
             Columns.REWARDS: torch.arange(B, dtype=torch.float32)}
    out = random_shift_obs(batch, generator=torch.Generator().manual_seed(2))
    assert out[Columns.REWARDS] is batch[Columns.REWARDS]
    assert out[Columns.OBS]["state"] is batch[Columns.OBS]["state"]
    assert torch.equal(batch[Columns.OBS]["image"], x)  # the input batch is untouched
    obs_shifts = [shift_of(a, b) for a, b in zip(x.numpy(), out[Columns.OBS]["image"].numpy())]
    next_shifts = [shift_of(a, b) for a, b in zip(x.numpy(),
                                                  out[Columns.NEXT_OBS]["image"].numpy())]
    assert None not in obs_shifts + next_shifts
    assert obs_shifts != next_shifts


class RecordingLearner(TD3TorchLearner):
    """Keeps the batch each critic step trains on."""

    def _critic_step(self, module_id, config, batch):
        self.seen = getattr(self, "seen", []) + [batch]
        return super()._critic_step(module_id, config, batch)


def run_updates(updates=3, **training):
    config = (TD3Config()
              .environment(observation_space=OBS, action_space=ACT)
              .training(train_batch_size_per_learner=B, actor_hiddens=[16], critic_hiddens=[16],
                        frame_stack=FRAMES, learner_class=RecordingLearner, **training))
    learner = config.build_learner()
    rng = np.random.default_rng(0)
    n = updates * B
    stacks = rng.integers(0, 256, (n, FRAMES, SIZE, SIZE), dtype=np.uint8)
    data = {
        Columns.OBS: {"image": stacks, "state": np.zeros((n, 3), np.float32)},
        Columns.ACTIONS: rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        Columns.REWARDS: np.zeros(n, np.float32),
        Columns.NEXT_OBS: {"image": stacks.copy(), "state": np.zeros((n, 3), np.float32)},
        Columns.TERMINATEDS: np.zeros(n, bool),
        DISCOUNTS: np.full(n, 0.99, np.float32),
    }
    learner.update(batch=MultiAgentBatch({"default_policy": SampleBatch(data)}, env_steps=n))
    return stacks, learner.seen


def test_learner_shifts_every_gradient_steps_obs_and_next_obs():
    stacks, seen = run_updates(image_encoder="small_cnn")
    assert len(seen) == 3
    for step, batch in enumerate(seen):
        rows = stacks[step * B:(step + 1) * B]
        for column in (Columns.OBS, Columns.NEXT_OBS):
            image = batch[column]["image"]
            assert image.dtype == torch.uint8
            shifts = [shift_of(a, b) for a, b in zip(rows, image.cpu().numpy())]
            assert None not in shifts
            assert set(shifts) != {(0, 0)}


@pytest.mark.parametrize("training", [dict(image_encoder="small_cnn", image_augmentation=False),
                                      dict(image_encoder="none")])
def test_learner_leaves_images_alone_without_augmentation_or_image_encoder(training):
    stacks, seen = run_updates(**training)
    for step, batch in enumerate(seen):
        rows = stacks[step * B:(step + 1) * B]
        assert np.array_equal(batch[Columns.OBS]["image"].cpu().numpy(), rows)
        assert np.array_equal(batch[Columns.NEXT_OBS]["image"].cpu().numpy(), rows)
