"""TD3's torch networks: observation encoders, the deterministic actor, twin critics.

Observations are either a flat Box (MLP) or the driving Dict of DESIGN.md:
``image`` uint8 (frames, 84, 84) -> NatureCNN, ``state`` float32 -> MLP, the two
features concatenated. Images stay uint8 until here; the encoder scales them.
"""

from __future__ import annotations

from typing import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

IMAGE_KEY = "image"
STATE_KEY = "state"


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


class ObsEncoder(nn.Module):
    """Box obs -> flattened float; Dict(image, state) -> CNN features ++ state MLP features."""

    def __init__(self, obs_space: gym.Space, state_hiddens: Sequence[int] = (64,)):
        super().__init__()
        if isinstance(obs_space, gym.spaces.Dict):
            self.cnn = NatureCNN(obs_space[IMAGE_KEY].shape[0])
            state_dim = int(np.prod(obs_space[STATE_KEY].shape))
            self.state_mlp = mlp(state_dim, state_hiddens)
            self.out_dim = self.cnn.out_dim + state_hiddens[-1]
        else:
            self.cnn = None
            self.out_dim = int(np.prod(obs_space.shape))

    def forward(self, obs) -> torch.Tensor:
        if self.cnn is None:
            return obs.flatten(1).float()
        return torch.cat([self.cnn(obs[IMAGE_KEY]), self.state_mlp(obs[STATE_KEY])], dim=-1)


class Actor(nn.Module):
    """Deterministic policy mu(s) in the normalized action box [-1, 1]."""

    def __init__(self, obs_space: gym.Space, action_dim: int, hiddens: Sequence[int]):
        super().__init__()
        self.encoder = ObsEncoder(obs_space)
        self.head = mlp(self.encoder.out_dim, hiddens, action_dim)

    def forward(self, obs) -> torch.Tensor:
        return torch.tanh(self.head(self.encoder(obs)))


class Critic(nn.Module):
    """Q(s, a): encoder features ++ action -> MLP -> scalar."""

    def __init__(self, obs_space: gym.Space, action_dim: int, hiddens: Sequence[int]):
        super().__init__()
        self.encoder = ObsEncoder(obs_space)
        self.head = mlp(self.encoder.out_dim + action_dim, hiddens, 1)

    def forward(self, obs, action: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.encoder(obs), action], dim=-1)).squeeze(-1)


class TwinCritic(nn.Module):
    """The two independent critics of clipped double Q-learning."""

    def __init__(self, obs_space: gym.Space, action_dim: int, hiddens: Sequence[int]):
        super().__init__()
        self.q1 = Critic(obs_space, action_dim, hiddens)
        self.q2 = Critic(obs_space, action_dim, hiddens)

    def forward(self, obs, action: torch.Tensor):
        return self.q1(obs, action), self.q2(obs, action)
