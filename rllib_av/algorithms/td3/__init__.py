"""TD3 on RLlib's new API stack; importing registers "TD3" with Ray Tune."""

from rllib_av.algorithms.td3.td3 import TD3, TD3Config

__all__ = ["TD3", "TD3Config"]
