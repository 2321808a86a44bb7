"""The critic probes' records: one line of ``probes.jsonl`` per probe.

A record holds the reward pipeline and terminal-masking checks and the
Monte-Carlo overestimation probe of one moment of a run (run by
rllib_av/critic_probes.py during training and at its end); preflight and
diagnose read them back here.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List

PROBES_FILE = "probes.jsonl"


def read_probes(run_dir: str) -> List[Dict]:
    path = os.path.join(run_dir, PROBES_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
