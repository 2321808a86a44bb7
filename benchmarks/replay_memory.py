"""Replay memory per image transition, measured on the real buffer.

Fills the learner's ReplayStorage with 100k transitions of DrivingEnv-shaped
observations (uint8 84x84 frame + 23-float state, 200-step episodes, as RLlib
SingleAgentEpisode chunks) and reports the buffer's bytes per transition and
the process RSS growth, beside the reference design that stores 4 float32
frames for both state and next state (~226 KB per transition).

    python benchmarks/replay_memory.py [--transitions 100000]
"""

import argparse
import json
import os
import resource

import gymnasium as gym
import numpy as np

from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rllib_av.replay.episode_chunk import EpisodeChunk
from rllib_av.replay.sampling import TransitionSampler
from rllib_av.replay.storage import ReplayStorage

OBS = gym.spaces.Dict({
    "image": gym.spaces.Box(0, 255, (84, 84), np.uint8),
    "state": gym.spaces.Box(-np.inf, np.inf, (23,), np.float32),
})
ACT = gym.spaces.Box(-1, 1, (2,), np.float32)
EPISODE_STEPS = 200


def rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def episode(rng, steps):
    def obs():
        return {"image": rng.integers(0, 256, (84, 84), dtype=np.uint8),
                "state": rng.normal(size=23).astype(np.float32)}

    ep = SingleAgentEpisode(observation_space=OBS, action_space=ACT)
    ep.add_env_reset(obs())
    for t in range(steps):
        ep.add_env_step(obs(), rng.uniform(-1, 1, 2).astype(np.float32), float(rng.normal()),
                        truncated=t == steps - 1)
    return ep.to_numpy()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--transitions", type=int, default=100_000)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "replay_memory.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rss0 = rss_bytes()
    # Capacity = observations stored: T transitions of an episode use T + 1 slots.
    capacity = args.transitions + args.transitions // EPISODE_STEPS
    buffer = ReplayStorage(capacity, padded_keys={"image"})
    while buffer.num_transitions_added < args.transitions:
        buffer.add_chunks([EpisodeChunk.from_episode(episode(rng, EPISODE_STEPS))])
    batch = TransitionSampler(buffer, gamma=0.99, frame_stack=4).sample(256)  # 4-frame stacks
    per_transition = buffer.nbytes() / buffer.num_transitions_added
    reference = 2 * 4 * 84 * 84 * 4 + 2 * 23 * 4 + 2 * 4 + 4 + 1  # 4 float32 frames, s and s'
    out = {
        "transitions": buffer.num_transitions_added,
        "buffer_bytes": buffer.nbytes(),
        "bytes_per_transition": per_transition,
        "kb_per_transition": per_transition / 1024,
        "target_kb": 8.0,
        "reference_float32_4frame_kb": reference / 1024,
        "ratio_reference_over_ours": reference / per_transition,
        "process_rss_growth_bytes_per_transition": (rss_bytes() - rss0) / buffer.num_transitions_added,
        "sampled_image_batch_shape": list(batch["obs"]["image"].shape),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
