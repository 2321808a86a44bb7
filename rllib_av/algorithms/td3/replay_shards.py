"""Checkpointing the learners' replay shards: ``<dir>/shard_<i>`` per learner.

Each learner writes (and reads) its own shard, so a multi-GB buffer never
passes through the driver. A learner on another node than the driver works
in a temporary folder there, synced with Ray's ``sync_dir_between_nodes``, as
RLlib does for the learner state of its own checkpoints.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable, List

import ray
from ray.tune.utils.file_transfer import sync_dir_between_nodes


def shard_dir(path: str, index: int) -> str:
    return os.path.join(path, f"shard_{index}")


def save_shards(foreach_learner: Callable, path: str) -> None:
    """Every learner's shard into ``path``."""
    driver_ip = ray.util.get_node_ip_address()

    def save(learner, _path=path, _driver_ip=driver_ip):
        target = shard_dir(_path, learner.shard_index)
        here = ray.util.get_node_ip_address()
        if here == _driver_ip:
            learner.save_replay(target)
            return None
        local = tempfile.mkdtemp(prefix="rllib_av_shard_")
        learner.save_replay(local)
        sync_dir_between_nodes(here, local, _driver_ip, target, max_size_bytes=None)
        shutil.rmtree(local)
        return None

    foreach_learner(save)


def load_shards(foreach_learner: Callable, path: str) -> List[int]:
    """Every learner reads its shard from ``path``; returns the shard indices read."""
    driver_ip = ray.util.get_node_ip_address()

    def load(learner, _path=path, _driver_ip=driver_ip):
        source = shard_dir(_path, learner.shard_index)
        here = ray.util.get_node_ip_address()
        if here == _driver_ip:
            learner.load_replay(source)
        else:
            with tempfile.TemporaryDirectory(prefix="rllib_av_shard_") as local:
                sync_dir_between_nodes(_driver_ip, source, here, local, max_size_bytes=None)
                learner.load_replay(local)
        return learner.shard_index

    return foreach_learner(load)
