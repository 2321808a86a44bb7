"""Env-to-module frame stacking for the driving Dict observation.

RLlib's own ``FrameStackingEnvToModule`` only handles a Box with a trailing
channel of 1. The driving env emits ``{"image": (84, 84) uint8, "state": ...}``
per step; this piece hands the RLModule ``{"image": (frames, 84, 84) uint8,
"state": latest}``, padding with zero frames before the episode start just as
RLlib's does. Episodes keep single frames, and the replay buffer rebuilds the
same stacks by index (rllib_av/replay/sampling.py), so each frame is stored once.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import gymnasium as gym
import numpy as np

from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule

from rllib_av.algorithms.td3.networks import IMAGE_KEY


def stacks_frames(obs_space: gym.Space) -> bool:
    return isinstance(obs_space, gym.spaces.Dict) and IMAGE_KEY in obs_space.spaces


class DictImageFrameStacking(ConnectorV2):
    def __init__(self, input_observation_space=None, input_action_space=None, *,
                 num_frames: int = 4, **kwargs):
        self.num_frames = num_frames
        super().__init__(input_observation_space, input_action_space, **kwargs)

    def recompute_output_observation_space(self, input_observation_space, input_action_space):
        image = input_observation_space[IMAGE_KEY]
        stacked = gym.spaces.Box(0, 255, (self.num_frames,) + image.shape, np.uint8)
        return gym.spaces.Dict({**input_observation_space.spaces, IMAGE_KEY: stacked})

    def __call__(self, *, rl_module: RLModule, batch: Dict[str, Any], episodes: List,
                 explore: Optional[bool] = None, shared_data: Optional[dict] = None,
                 **kwargs) -> Any:
        for episode in self.single_agent_episode_iterator(episodes):
            # Reaches into the lookback buffer across chunk cuts (the config keeps
            # num_frames - 1 observations there); zero-filled before the start.
            frames = episode.get_observations(indices=slice(-self.num_frames, None), fill=0.0)
            image = np.stack([f[IMAGE_KEY] for f in frames])
            self.add_batch_item(batch=batch, column=Columns.OBS,
                                item_to_add={**frames[-1], IMAGE_KEY: image},
                                single_agent_episode=episode)
        return batch
