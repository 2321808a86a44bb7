"""A run's TensorBoard event files read back as metrics.jsonl-style records.

For runs whose metrics file is gone (or that only kept TensorBoard), and for
diagnose to compare what TensorBoard shows with what the learner computed: the
writer's tags (the statistics spec's, and the few below, which
monitoring/tensorboard_writer.py writes) map back to the record keys. Event
files are TFRecord streams of ``Event`` protos: a little parser here saves
depending on TensorFlow or TensorBoard.
"""

from __future__ import annotations

import glob
import os
import struct
from typing import Dict, Iterator, List, Optional, Tuple

from ray.rllib.core import DEFAULT_MODULE_ID
from tensorboardX.proto import event_pb2

from rllib_av.health.statistics import tensorboard_keys

# Tags of the scalars that are not learner statistics -> metrics.jsonl keys.
DIVERGENCE_TAG = "health/divergence_state"
EPISODE_TAGS = {"episode/return_mean": "episode_return_mean",
                "episode/length_mean": "episode_len_mean"}
_FROM_TAG = {tag: f"{DEFAULT_MODULE_ID}/{key}" for tag, key in tensorboard_keys().items()}
_FROM_TAG.update({DIVERGENCE_TAG: "divergence_state", **EPISODE_TAGS})


def record_key(tag: str) -> Optional[str]:
    if tag in _FROM_TAG:
        return _FROM_TAG[tag]
    if tag.startswith(("reward_components/", "reward_share/")):
        return tag
    return None  # other modules' tags (suffixed) and foreign scalars


def scalars(path: str) -> Iterator[Tuple[int, str, float]]:
    """(step, tag, value) of every scalar in one event file (a torn tail is skipped)."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        start, end = pos + 12, pos + 12 + length
        if end + 4 > len(data):
            return
        event = event_pb2.Event.FromString(data[start:end])
        for value in event.summary.value:
            if value.HasField("simple_value"):
                yield event.step, value.tag, value.simple_value
        pos = end + 4


def tensorboard_scalars(run_dir: str) -> Iterator[Tuple[int, str, float]]:
    """(step, tag, value) of every scalar of the run's event files, oldest file first."""
    for path in sorted(glob.glob(os.path.join(run_dir, "tensorboard", "events.out.tfevents.*"))):
        yield from scalars(path)


def read_tensorboard_records(run_dir: str) -> List[Dict]:
    by_step: Dict[int, Dict] = {}
    for step, tag, value in tensorboard_scalars(run_dir):
        key = record_key(tag)
        if key is not None:
            by_step.setdefault(step, {"env_steps": step})[key] = value
    records = [by_step[s] for s in sorted(by_step)]
    for i, r in enumerate(records, 1):
        r["training_iteration"] = i  # not logged; counted
    return records
