"""TD3's torch networks: the observation encoder, the deterministic actor, twin critics.

Observations are either a flat Box or the driving env's Dict (envs/driving_env.py):
``image`` uint8 (frames, 84, 84) -> a CNN (``CNNS``), ``state`` float32 -> MLP,
the two features concatenated. Images stay uint8 until here; the encoder scales them.
One encoder is shared by actor and critics (as in DrQ-v2): the critic loss
trains it, the actor sees its features detached. Three CNNs per update would
cost ~4x the compute for no gain in a TD3 that learns from pixels.
"""

from __future__ import annotations

from typing import FrozenSet, Optional, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

IMAGE_KEY = "image"
STATE_KEY = "state"


def encoder_inputs(obs_space: gym.Space, image_encoder: str) -> Optional[FrozenSet[str]]:
    """The Dict observation leaves the encoder reads (None: a Box, read whole).
    Only these are shipped to the learner, journaled, stored and checkpointed."""
    if not isinstance(obs_space, gym.spaces.Dict):
        return None
    return frozenset({STATE_KEY} | ({IMAGE_KEY} if image_encoder != "none" else set()))


def mlp(in_dim: int, hiddens: Sequence[int], out_dim: int = 0) -> nn.Sequential:
    """ReLU MLP; a final linear layer to ``out_dim`` when it is > 0."""
    layers, d = [], in_dim
    for h in hiddens:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    if out_dim:
        layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class NatureCNN(nn.Module):
    """Mnih et al. 2015's encoder for a (frames, 84, 84) uint8 stack."""

    def __init__(self, in_frames: int, out_dim: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_frames, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, out_dim), nn.ReLU(),
        )
        self.out_dim = out_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image.float() * (1.0 / 255.0))


class SmallCNN(nn.Module):
    """An encoder a CPU can afford: the stack at half resolution (2x2 means,
    42x42: 1 m per pixel on the embedded camera, where a car is still 5 x 2
    pixels), then three 3x3 convolutions with 16, 32, 32 channels, flattened.

    About a tenth of NatureCNN's multiply-adds per stack
    (benchmarks/encoder_cost.py measures the update).
    """

    def __init__(self, in_frames: int, size: int = 84):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_frames, 16, 3, stride=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():  # 32 x 7 x 7 for 84x84 frames
            self.out_dim = self.net(torch.zeros(1, in_frames, size // 2, size // 2)).shape[1]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(half_resolution(image) * (1.0 / (4 * 255)))


def half_resolution(image: torch.Tensor) -> torch.Tensor:
    """(..., H, W) uint8 -> (..., H/2, W/2) float sums of 2x2 blocks.

    Pairs of rows, then pairs of columns, added as strided views: about 3x
    cheaper on a CPU than ``avg_pool2d`` of the float image.
    """
    *lead, h, w = image.shape
    rows = image.reshape(*lead, h // 2, 2 * w)
    pairs = rows[..., :w].float() + rows[..., w:]
    return pairs[..., 0::2] + pairs[..., 1::2]


#: ``training.image_encoder`` -> the CNN for the image stack ("none": no CNN).
CNNS = {"nature_cnn": NatureCNN, "small_cnn": SmallCNN}


class ObsEncoder(nn.Module):
    """Box obs -> flattened float; Dict(image, state) -> features in [-1, 1].

    Dict: CNN(image) ++ MLP(state) -> Linear -> LayerNorm -> tanh (DrQ-v2's
    trunk). The state vector mixes metres, m/s and radians of very different
    scales; without the normalized trunk the actor's tanh saturates and its
    gradient vanishes. ``image_encoder`` names a CNN of ``CNNS``;
    ``image_encoder="none"`` drives from the state vector
    alone (the image is still observed, just not encoded): for CPU-only runs
    where a CNN per update is too slow.
    """

    def __init__(self, obs_space: gym.Space, image_encoder: str = "nature_cnn",
                 state_hiddens: Sequence[int] = (64,), feature_dim: int = 64):
        super().__init__()
        self.cnn, self.state_mlp = None, None
        if isinstance(obs_space, gym.spaces.Dict):
            state_dim = int(np.prod(obs_space[STATE_KEY].shape))
            self.state_mlp = mlp(state_dim, state_hiddens)
            raw_dim = state_hiddens[-1]
            if IMAGE_KEY in encoder_inputs(obs_space, image_encoder):
                self.cnn = CNNS[image_encoder](obs_space[IMAGE_KEY].shape[0])
                raw_dim += self.cnn.out_dim
            self.trunk = nn.Sequential(nn.Linear(raw_dim, feature_dim), nn.LayerNorm(feature_dim),
                                       nn.Tanh())
            self.out_dim = feature_dim
        else:
            self.out_dim = int(np.prod(obs_space.shape))

    @property
    def encodes_images(self) -> bool:
        return self.cnn is not None

    def forward(self, obs) -> torch.Tensor:
        if self.state_mlp is None:
            return obs.flatten(1).float()
        features = self.state_mlp(obs[STATE_KEY])
        if self.cnn is not None:
            features = torch.cat([self.cnn(obs[IMAGE_KEY]), features], dim=-1)
        return self.trunk(features)


class Actor(nn.Module):
    """Deterministic policy head: features -> action in the normalized box [-1, 1]."""

    def __init__(self, feature_dim: int, action_dim: int, hiddens: Sequence[int]):
        super().__init__()
        self.net = mlp(feature_dim, hiddens, action_dim)

    def pre_tanh(self, features: torch.Tensor) -> torch.Tensor:
        """The action before its tanh squashing (what
        ``training.actor_preactivation_l2`` keeps from saturating)."""
        return self.net(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.pre_tanh(features))


class TwinCritic(nn.Module):
    """The two independent Q heads of clipped double Q-learning: (features ++ action) -> Q."""

    def __init__(self, feature_dim: int, action_dim: int, hiddens: Sequence[int]):
        super().__init__()
        self.q1_net = mlp(feature_dim + action_dim, hiddens, 1)
        self.q2_net = mlp(feature_dim + action_dim, hiddens, 1)

    def q1(self, features: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.q1_net(torch.cat([features, action], dim=-1)).squeeze(-1)

    def forward(self, features: torch.Tensor, action: torch.Tensor):
        x = torch.cat([features, action], dim=-1)
        return self.q1_net(x).squeeze(-1), self.q2_net(x).squeeze(-1)
