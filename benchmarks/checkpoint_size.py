"""What a checkpoint weighs: the quickstart (highway backend, state-only
encoder) trained for N env steps, one checkpoint at the end; its bytes, the
replay's bytes per stored transition, and the same extrapolated to a longer
run (the replay holds every transition until training.buffer_size, 1M by
default; the rest of a checkpoint, weights and optimizer state, is constant).

    python benchmarks/checkpoint_size.py [--steps 3000] [--extrapolate 200000]

Writes benchmarks/results/checkpoint_size.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import ray

from rllib_av.checkpoints import latest_checkpoint, read_meta
from rllib_av.run_config import load_run_config
from rllib_av.training import train
from side_by_side import write_results

ROOT = Path(__file__).resolve().parents[1]


def du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--extrapolate", type=int, default=200_000)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rc = load_run_config(str(ROOT / "configs" / "quickstart.yaml"), [
        f"run.output_dir={tempfile.mkdtemp(prefix='ckpt-size-')}",
        f"run.total_env_steps={args.steps}", "run.min_time_s_per_iteration=0",
        "run.checkpoint_every_iters=1000000", "monitoring.exporter_port=0",
        "monitoring.tensorboard=false", "health.probe_every_iters=0"])
    ckpt = latest_checkpoint(train(rc, verbose=False))
    steps = read_meta(ckpt)["env_steps"]
    replay = du(os.path.join(ckpt, "replay_buffer"))
    rest = du(ckpt) - replay
    per_transition = replay / steps
    kept = min(args.extrapolate, rc.training.buffer_size)
    summary = {
        "config": "configs/quickstart.yaml", "image_encoder": rc.training.image_encoder,
        "env_steps": steps, "checkpoint_bytes": du(ckpt), "replay_bytes": replay,
        "replay_bytes_per_transition": per_transition, "rest_bytes": rest,
        f"checkpoint_mb_at_{args.extrapolate}_steps": (kept * per_transition + rest) / 2**20,
    }
    write_results("checkpoint_size", {"args": vars(args), "summary": summary})


if __name__ == "__main__":
    main()
