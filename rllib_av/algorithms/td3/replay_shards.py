"""Checkpointing the learners' replay shards: ``<dir>/shard_<i>`` per learner.

Each learner writes (and reads) its own shard, so a multi-GB buffer never
passes through the driver. A learner on another node than the driver works
in a temporary folder there, synced with Ray's ``sync_dir_between_nodes``, as
RLlib does for the learner state of its own checkpoints.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable, List

import ray
from ray.tune.utils.file_transfer import sync_dir_between_nodes


def shard_dir(path: str, index: int) -> str:
    return os.path.join(path, f"shard_{index}")


def save_shards(foreach_learner: Callable, path: str) -> None:
    """Every learner's shard into ``path`` (on the driver's node)."""
    _each_shard(foreach_learner, path, save=True)


def load_shards(foreach_learner: Callable, path: str) -> List[int]:
    """Every learner reads its shard from ``path``; returns the shard indices read."""
    return _each_shard(foreach_learner, path, save=False)


def _each_shard(foreach_learner: Callable, path: str, save: bool) -> List[int]:
    driver_ip = ray.util.get_node_ip_address()

    def shard_io(learner):
        shard = shard_dir(path, learner.shard_index)
        here = ray.util.get_node_ip_address()
        if here == driver_ip and save:
            learner.save_replay(shard)
        elif here == driver_ip:
            learner.load_replay(shard)
        else:
            _across_nodes(learner, shard, here, driver_ip, save)
        return learner.shard_index
    return foreach_learner(shard_io)


def _across_nodes(learner, shard: str, here: str, driver_ip: str, save: bool) -> None:
    """Save or load through a temporary folder on the learner's node."""
    with tempfile.TemporaryDirectory(prefix="rllib_av_shard_") as local:
        if save:
            learner.save_replay(local)
            sync_dir_between_nodes(here, local, driver_ip, shard, max_size_bytes=None)
        else:
            sync_dir_between_nodes(driver_ip, shard, here, local, max_size_bytes=None)
            learner.load_replay(local)
