"""What an image encoder costs TD3: NatureCNN vs the small CNN, side by side in one run.

    python benchmarks/encoder_cost.py [--device cpu|cuda] [--rounds 5] [--train-iters 4]

update   one TD3 gradient step at batch 256 through the real TD3 Learner:
         DrQ shifts of obs and next_obs, the critic step (encoder forward on
         obs with gradients, target encoder on next_obs), the delayed actor
         step every ``policy_delay`` steps and the Polyak update; ms per
         update, ``--updates`` updates per Learner call (as training makes
         them), rounds alternating between encoders. The DrQ shift alone is
         timed too.
training env steps/s of ``--config`` (default configs/highway_traffic_camera.yaml,
         its update-to-data ratio and batch size) with each encoder, after
         learning has started: what a run on this machine actually makes.

Writes benchmarks/results/encoder_cost[_<device>].json. Timings are noisy on a
shared machine: compare the encoders' ratio, quote the absolute numbers with
the load average the file records.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

from rllib_av.algorithms.td3 import TD3Config
from rllib_av.algorithms.td3.augmentation import random_shift_obs
from rllib_av.replay.sampling import DISCOUNTS
from rllib_av.envs.driving_env import IMAGE_SHAPE, DrivingEnv
from rllib_av.run_config import load_run_config
from rllib_av.training import build_td3_config

from side_by_side import write_results  # noqa: E402  (benchmarks/ is the script's dir)

ENCODERS = ("nature_cnn", "small_cnn")
BATCH = 256


def _spaces(frames: int, state_dim: int):
    obs = gym.spaces.Dict({
        "image": gym.spaces.Box(0, 255, (frames,) + IMAGE_SHAPE, np.uint8),
        "state": gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32),
    })
    return obs, gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def _batch(n: int, frames: int, state_dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def obs():
        return {"image": rng.integers(0, 256, (n, frames) + IMAGE_SHAPE, dtype=np.uint8),
                "state": rng.normal(size=(n, state_dim)).astype(np.float32)}

    return {Columns.OBS: obs(), Columns.NEXT_OBS: obs(),
            Columns.ACTIONS: rng.uniform(-1, 1, (n, 2)).astype(np.float32),
            Columns.REWARDS: rng.normal(size=n).astype(np.float32),
            Columns.TERMINATEDS: np.zeros(n, bool), DISCOUNTS: np.full(n, 0.99, np.float32)}


def build_learner(encoder: str, frames: int, state_dim: int, device: str):
    obs_space, act_space = _spaces(frames, state_dim)
    config = (TD3Config()
              .environment(observation_space=obs_space, action_space=act_space)
              .training(train_batch_size_per_learner=BATCH, image_encoder=encoder,
                        frame_stack=frames)
              .learners(num_gpus_per_learner=1 if device == "cuda" else 0))
    return config.build_learner()


def time_updates(learner, data, updates: int) -> tuple:
    """(wall ms, process CPU ms) per gradient step over one Learner call of
    ``updates`` steps."""
    batch = MultiAgentBatch({"default_policy": SampleBatch(data)}, env_steps=updates * BATCH)
    t0, c0 = time.perf_counter(), time.process_time()
    learner.update(batch=batch)  # returns numbers: the device has finished
    return (1000 * (time.perf_counter() - t0) / updates,
            1000 * (time.process_time() - c0) / updates)


def time_shift(data, device: str, repeats: int = 5) -> float:
    """ms to shift obs and next_obs of one 256-batch (on the device)."""
    one = {k: data[k] for k in (Columns.OBS, Columns.NEXT_OBS)}
    batch = {k: {kk: torch.as_tensor(vv[:BATCH], device=device) for kk, vv in v.items()}
             for k, v in one.items()}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = random_shift_obs(batch)
        out[Columns.NEXT_OBS]["image"].sum().item()  # waits for the device
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def training_rate(config_path: str, encoder: str, iters: int, device: str) -> dict:
    """Env steps/s of a training run of ``config_path`` with ``encoder``."""
    rc = load_run_config(config_path, [
        f"training.image_encoder={encoder}", "monitoring.exporter_port=0",
        "run.min_time_s_per_iteration=0", "run.checkpoint_replay_buffer=false",
        f"resources.num_gpus_per_learner={1 if device == 'cuda' else 0}"])
    rc.training.learning_starts = rc.training.batch_size
    torch.set_num_threads(rc.resources.torch_threads)  # as rllib_av.training.train
    algo = build_td3_config(rc).build_algo()
    try:
        steps = 0
        while steps <= 2 * rc.training.learning_starts:  # updates running
            steps = algo.train()[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME]
        t0, c0, start = time.perf_counter(), time.process_time(), steps
        for _ in range(iters):
            steps = algo.train()[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME]
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        algo.stop()
    return {"env_steps": int(steps - start), "seconds": round(wall, 2),
            "env_steps_per_s": round((steps - start) / wall, 2),
            # The driver samples and learns (no remote actors): its CPU time
            # is the run's, whatever else the machine was doing.
            "driver_cpu_ms_per_env_step": round(1000 * cpu / (steps - start), 2),
            "updates_per_env_step": rc.training.updates_per_env_step,
            "batch_size": rc.training.batch_size, "frame_stack": rc.training.frame_stack}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--config", default="configs/highway_traffic_camera.yaml")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--updates", type=int, default=8, help="gradient steps per Learner call")
    ap.add_argument("--train-iters", type=int, default=4,
                    help="timed training iterations per encoder (0: skip)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("encoder_cost: --device cuda: no CUDA device visible")

    rc = load_run_config(args.config)
    frames = rc.training.frame_stack
    state_dim = DrivingEnv(rc.env).observation_space["state"].shape[0]
    torch.set_num_threads(rc.resources.torch_threads)
    data = _batch(args.updates * BATCH, frames, state_dim)
    learners = {e: build_learner(e, frames, state_dim, args.device) for e in ENCODERS}
    for learner in learners.values():  # first call: allocations, kernel selection
        time_updates(learner, data, args.updates)
    per_update = {e: [] for e in ENCODERS}
    for _ in range(args.rounds):
        for encoder, learner in learners.items():
            per_update[encoder].append(time_updates(learner, data, args.updates))
    update_ms = {e: round(statistics.median(w for w, _ in v), 2) for e, v in per_update.items()}
    update_cpu_ms = {e: round(statistics.median(c for _, c in v), 2)
                     for e, v in per_update.items()}
    shift_ms = round(time_shift(data, learners["small_cnn"].device.type), 3)

    training = {}
    if args.train_iters:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        for encoder in ENCODERS:
            training[encoder] = training_rate(args.config, encoder, args.train_iters,
                                              args.device)
            print(encoder, training[encoder], flush=True)
        ray.shutdown()

    summary = {
        "device": args.device, "batch_size": BATCH, "frame_stack": frames,
        "torch_threads": rc.resources.torch_threads,
        "update_ms": update_ms, "update_cpu_ms": update_cpu_ms,
        "update_ratio_nature_over_small": round(update_ms["nature_cnn"] / update_ms["small_cnn"], 2),
        "drq_shift_ms_per_batch": shift_ms,
        "training_env_steps_per_s": {e: t["env_steps_per_s"] for e, t in training.items()},
        "training_driver_cpu_ms_per_env_step": {e: t["driver_cpu_ms_per_env_step"]
                                                for e, t in training.items()},
    }
    name = "encoder_cost" if args.device == "cpu" else f"encoder_cost_{args.device}"
    write_results(name, {"summary": summary, "config": args.config,
                         "update_ms_per_round": per_update, "training": training})


if __name__ == "__main__":
    main()
