"""A run's TensorBoard event files read back as metrics.jsonl-style records.

For runs whose metrics file is gone (or that only kept TensorBoard): the
writer's tags (monitoring/tensorboard_writer.py) map back to the record keys
diagnose reads. Event files are TFRecord streams of ``Event`` protos: a little
parser here saves depending on TensorFlow or TensorBoard.
"""

from __future__ import annotations

import glob
import os
import struct
from typing import Dict, Iterator, List, Optional, Tuple

from tensorboardX.proto import event_pb2

from rllib_av.monitoring.tensorboard_writer import DEBUG_TAGS

MODULE = "default_policy"
_FROM_TAG = {tag: f"{MODULE}/{name}" for name, tag in DEBUG_TAGS.items()}
_FROM_TAG.update({"health/divergence_state": "divergence_state",
                  "episode/return_mean": "episode_return_mean",
                  "episode/length_mean": "episode_len_mean"})


def record_key(tag: str) -> Optional[str]:
    if tag in _FROM_TAG:
        return _FROM_TAG[tag]
    if tag.startswith("health/") and tag.count("/") == 1:
        return f"{MODULE}/{tag[len('health/'):]}"
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


def read_tensorboard_records(run_dir: str) -> List[Dict]:
    by_step: Dict[int, Dict] = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "tensorboard", "events.out.tfevents.*"))):
        for step, tag, value in scalars(path):
            key = record_key(tag)
            if key is not None:
                by_step.setdefault(step, {"env_steps": step})[key] = value
    records = [by_step[s] for s in sorted(by_step)]
    for i, r in enumerate(records, 1):
        r["training_iteration"] = i  # not logged; counted
    return records
