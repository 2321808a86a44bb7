"""TD3 on RLlib's new API stack; importing TD3 or TD3Config registers "TD3" with Ray Tune.

Loaded on first use (PEP 562), so reading a run config (training_settings.py)
does not import Ray and torch: a config error is reported in well under a second.
"""

import importlib

__all__ = ["TD3", "TD3Config"]


def __getattr__(name):
    if name in __all__:
        return getattr(importlib.import_module("rllib_av.algorithms.td3.td3"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
