"""The image encoders: every configurable one builds, takes uint8 stacks, and
trains through the critic only."""

import typing

import gymnasium as gym
import numpy as np
import pytest
import torch

from rllib_av.algorithms.td3.networks import CNNS, ObsEncoder, SmallCNN, half_resolution
from rllib_av.algorithms.td3.training_settings import TrainingSettings


def test_every_configurable_encoder_exists():
    allowed = typing.get_args(TrainingSettings.__pydantic_fields__["image_encoder"].annotation)
    assert set(allowed) == set(CNNS) | {"none"}


@pytest.mark.parametrize("name", sorted(CNNS))
@pytest.mark.parametrize("frames", [1, 3, 4])
def test_encoder_maps_a_uint8_stack_to_bounded_features(name, frames):
    space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (frames, 84, 84), np.uint8),
                             "state": gym.spaces.Box(-np.inf, np.inf, (7,), np.float32)})
    encoder = ObsEncoder(space, name)
    assert encoder.encodes_images
    obs = {"image": torch.randint(0, 256, (5, frames, 84, 84), dtype=torch.uint8),
           "state": torch.randn(5, 7)}
    out = encoder(obs)
    assert out.shape == (5, encoder.out_dim) and out.abs().max() <= 1.0
    # The image matters: another image, other features.
    other = {**obs, "image": torch.randint(0, 256, (5, frames, 84, 84), dtype=torch.uint8)}
    assert not torch.allclose(encoder(other), out)


def test_state_only_encoder_has_no_cnn():
    space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (1, 84, 84), np.uint8),
                             "state": gym.spaces.Box(-np.inf, np.inf, (7,), np.float32)})
    assert not ObsEncoder(space, "none").encodes_images


def test_small_cnn_sees_the_2x2_means():
    image = torch.randint(0, 256, (2, 3, 84, 84), dtype=torch.uint8)
    expected = torch.nn.functional.avg_pool2d(image.float(), 2)
    assert torch.allclose(half_resolution(image) / 4, expected)
    assert SmallCNN(3).out_dim == 32 * 7 * 7
