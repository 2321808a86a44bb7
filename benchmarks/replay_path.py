"""The replay path: driver-side batch building (before the learner owned the
replay) vs the learner-side replay, side by side in one run, same contents.

Both hold the same N camera transitions (84x84 uint8 frame + 23-float state,
200-step episodes as RLlib SingleAgentEpisode chunks), frame_stack 4, batch
256, update-to-data ratio 1 (one update per env step), a training step of 64
env steps (configs/carla_town01.yaml's fragment):

- old: the driver holds the buffer and builds every batch, then hands the
  learner the built batch (4-frame stacks of obs and next obs);
- new: the driver deals the step's episode chunks (each frame once) to the
  learner, which samples its batches where its storage lives (``--device``).

Reported: bytes moved into the learner per env step; driver CPU ms per update
spent on batch building (new: the driver's whole share of a step: finiteness
check, reward statistics, dealing, serializing the chunks); driver peak RSS
over a training step (a fresh process per path); sample cost per 256-batch
(old: the driver's CPU; new: the learner's device); and NatureCNN TD3 gradient
updates/s fed by each path (old: a CPU-built batch through RLlib's
``Learner.update``, copied to the device; new: ``update_from_replay``).

    python benchmarks/replay_path.py [--transitions 100000] [--device cpu|cuda] [--rounds 3]

Writes benchmarks/results/replay_path.json.
"""

from __future__ import annotations

import argparse
import multiprocessing
import pickle
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from replay_memory import ACT, EPISODE_STEPS, episode
from rllib_av.replay.episode_chunk import EpisodeChunk
from rllib_av.replay.reward_processing import RewardProcessor
from rllib_av.replay.sampling import TransitionSampler
from rllib_av.replay.sharding import ShardAssignment
from rllib_av.replay.storage import ReplayStorage
from side_by_side import write_results

FRAME_STACK, BATCH, STEP_ENV_STEPS = 4, 256, 64
STACKED_OBS = gym.spaces.Dict({
    "image": gym.spaces.Box(0, 255, (FRAME_STACK, 84, 84), np.uint8),
    "state": gym.spaces.Box(-np.inf, np.inf, (23,), np.float32),
})


def fill(storage: ReplayStorage, transitions: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    while storage.num_transitions_added < transitions:
        storage.add_chunks([EpisodeChunk.from_episode(episode(rng, EPISODE_STEPS))])


def storage_for(transitions: int, device) -> ReplayStorage:
    return ReplayStorage(transitions + transitions // EPISODE_STEPS, device=device,
                         padded_keys={"image"})


def step_chunks(seed: int = 1):
    """One training step's chunks: 64 env steps of one runner's episode."""
    ep = episode(np.random.default_rng(seed), STEP_ENV_STEPS)
    return [EpisodeChunk.from_episode(ep)]


def driver_share_of_a_step(chunks, processor, shards) -> bytes:
    """What the driver does with a step's chunks on the new path."""
    finite = [c for c in chunks if c.is_finite()]
    for c in finite:
        processor.observe(c.id, c.rewards, c.done)
    dealt = shards.deal(chunks)
    return pickle.dumps(dealt[0], protocol=5)  # what crosses to the learner (ray.put)


def timed(fn, seconds: float = 2.0, sync=lambda: None) -> float:
    """Mean seconds per call of ``fn`` over about ``seconds``."""
    fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    sync()
    return (time.perf_counter() - t0) / n


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _peak_rss_child(path: str, transitions: int, queue) -> None:
    """A fresh 'driver' process (Linux): peak RSS over one training step, and
    how much it rose during the step (the peak is reset just before it)."""
    torch.set_num_threads(1)
    if path == "old":
        storage = storage_for(transitions, "cpu")
        fill(storage, transitions)
        sampler = TransitionSampler(storage, gamma=0.99, frame_stack=FRAME_STACK, seed=0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = _rss_kb("VmRSS")
    if path == "old":  # the old training step: one 64 x 256 batch, built here
        sampler.sample(STEP_ENV_STEPS * BATCH)
    else:
        driver_share_of_a_step(step_chunks(), RewardProcessor(0.99), ShardAssignment(1))
    peak = _rss_kb("VmHWM")
    queue.put({"peak_rss_mb": peak / 1024, "step_growth_mb": (peak - before) / 1024})


def peak_rss(path: str, transitions: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_rss_child, args=(path, transitions, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def nature_cnn_learner(capacity: int, device: str):
    from rllib_av.algorithms.td3 import TD3Config

    config = (TD3Config()
              .environment(observation_space=STACKED_OBS, action_space=ACT)
              .training(train_batch_size_per_learner=BATCH,
                        replay_buffer_config={"capacity": capacity}, frame_stack=FRAME_STACK,
                        image_encoder="nature_cnn")
              .learners(num_gpus_per_learner=1 if device == "cuda" else 0))
    return config.build_learner()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--transitions", type=int, default=100_000)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=None,
                        help="NatureCNN updates per round and path (default: 64 on cuda, 4 on cpu)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible to torch")
    updates = args.updates or (STEP_ENV_STEPS if args.device == "cuda" else 4)
    torch.set_num_threads(1)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    # Same contents on both paths: the driver's CPU storage (old) and the
    # learner's storage on its device (new), filled from the same episodes.
    old_storage = storage_for(args.transitions, "cpu")
    fill(old_storage, args.transitions)
    old_sampler = TransitionSampler(old_storage, gamma=0.99, frame_stack=FRAME_STACK, seed=0)
    learner = nature_cnn_learner(old_storage.capacity, args.device)
    fill(learner.replay_storage, args.transitions)
    new_sampler = learner.replay_sampler

    chunks = step_chunks()
    bytes_old = len(pickle.dumps(_numpy(old_sampler.sample(BATCH)), protocol=5))
    bytes_new = len(driver_share_of_a_step(chunks, RewardProcessor(0.99), ShardAssignment(1)))
    bytes_new /= STEP_ENV_STEPS

    rounds = []
    for r in range(args.rounds):
        row = {}
        # Driver CPU per update: old builds a 64 x 256 batch per training step
        # (as TD3.training_step did), new does its share of the step's chunks.
        row["old_driver_ms_per_update"] = 1e3 * timed(
            lambda: _numpy(old_sampler.sample(STEP_ENV_STEPS * BATCH)), 3.0) / STEP_ENV_STEPS
        row["new_driver_ms_per_update"] = 1e3 * timed(
            lambda: driver_share_of_a_step(chunks, RewardProcessor(0.99), ShardAssignment(1)),
            1.0) / STEP_ENV_STEPS
        row["old_sample_ms_per_256_cpu"] = 1e3 * timed(lambda: old_sampler.sample(BATCH), 1.0)
        row[f"new_sample_ms_per_256_{args.device}"] = 1e3 * timed(
            lambda: new_sampler.sample(BATCH), 1.0, sync)
        # NatureCNN TD3 updates fed by each path, alternating.
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for path in order:
            t0 = time.perf_counter()
            if path == "old":
                batch = _numpy(old_sampler.sample(updates * BATCH))
                learner.update(batch=MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(batch)},
                                                     env_steps=updates * BATCH))
            else:
                learner.update_from_replay(updates)
            sync()
            row[f"{path}_nature_cnn_updates_per_s"] = updates / (time.perf_counter() - t0)
        rounds.append(row)
        print(row, flush=True)

    rss = {path: peak_rss(path, args.transitions) for path in ("old", "new")}

    def med(key):
        return statistics.median(r[key] for r in rounds)

    summary = {
        "device": args.device,
        "transitions": old_storage.num_transitions_added,
        "bytes_into_learner_per_env_step": {"old": bytes_old, "new": bytes_new,
                                            "ratio_old_over_new": bytes_old / bytes_new},
        "driver_ms_per_update_batch_building": {"old": med("old_driver_ms_per_update"),
                                                "new": med("new_driver_ms_per_update")},
        "driver_peak_rss_mb_training_step": {p: rss[p]["peak_rss_mb"] for p in rss},
        "driver_rss_growth_mb_during_step": {p: rss[p]["step_growth_mb"] for p in rss},
        "sample_ms_per_256": {"old_driver_cpu": med("old_sample_ms_per_256_cpu"),
                              f"new_learner_{args.device}": med(f"new_sample_ms_per_256_{args.device}")},
        "nature_cnn_updates_per_s": {"old": med("old_nature_cnn_updates_per_s"),
                                     "new": med("new_nature_cnn_updates_per_s")},
    }
    write_results("replay_path", {"args": vars(args), "summary": summary, "rounds": rounds})


def _numpy(batch):
    """A batch as the old driver built it: numpy arrays."""
    if isinstance(batch, dict):
        return {k: _numpy(v) for k, v in batch.items()}
    return batch.cpu().numpy()


if __name__ == "__main__":
    main()
