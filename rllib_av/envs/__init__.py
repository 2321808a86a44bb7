"""Driving environments: DrivingEnv over the highway-env or CARLA backend."""

import gymnasium

from rllib_av.envs.driving_env import DrivingEnv, route_completion

#: ``gymnasium.make(GYM_ID, env_config={...})`` builds a DrivingEnv.
GYM_ID = "rllib_av/Driving-v0"
if GYM_ID not in gymnasium.registry:
    gymnasium.register(id=GYM_ID, entry_point="rllib_av.envs.driving_env:DrivingEnv")

__all__ = ["DrivingEnv", "GYM_ID", "route_completion"]
