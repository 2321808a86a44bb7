"""rllib_av TD3 vs Stable-Baselines3 TD3 on Pendulum-v1, side by side in one process.

Same settings for both: MLP 256x256, batch 256, lr 1e-3, gamma 0.99, tau 0.005,
Gaussian exploration 0.1, target smoothing 0.2 / 0.5, policy delay 2,
uniform-random warm-up and learning start at 1000 steps, one gradient update
per env step, one torch thread. Seeds are interleaved (SB3, ours, SB3, ours...)
so machine noise hits both alike. Reports env steps/s (whole run, warm-up
included), the deterministic eval return (10 episodes) after the budget, their
ratios, and our time split per phase from RLlib's timers.

    python benchmarks/td3_vs_sb3.py [--steps 10000] [--seeds 0 1 2]
"""

import argparse
import json
import os
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

ENV = "Pendulum-v1"
LEARNING_STARTS = 1000
EVAL_EPISODES = 10


def evaluate(act, seed: int) -> float:
    env = gym.make(ENV)
    returns = []
    for ep in range(EVAL_EPISODES):
        obs, _ = env.reset(seed=10_000 + seed * 100 + ep)
        done, total = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(act(obs))
            total += r
            done = term or trunc
        returns.append(total)
    return float(np.mean(returns))


def run_sb3(steps: int, seed: int) -> dict:
    from stable_baselines3 import TD3
    from stable_baselines3.common.noise import NormalActionNoise

    env = gym.make(ENV)
    model = TD3("MlpPolicy", env, learning_rate=1e-3, buffer_size=1_000_000,
                learning_starts=LEARNING_STARTS, batch_size=256, tau=0.005, gamma=0.99,
                train_freq=1, gradient_steps=1, policy_delay=2, target_policy_noise=0.2,
                target_noise_clip=0.5,
                action_noise=NormalActionNoise(np.zeros(1), 0.1 * np.ones(1)),
                policy_kwargs=dict(net_arch=[256, 256]), seed=seed, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - t0
    ret = evaluate(lambda o: model.predict(o, deterministic=True)[0], seed)
    return {"env_steps_per_s": steps / wall, "eval_return": ret, "wall_s": wall}


def run_ours(steps: int, seed: int) -> dict:
    from ray.rllib.core.columns import Columns

    from rllib_av.algorithms.td3 import TD3Config

    config = (
        TD3Config().environment(ENV)
        .training(actor_lr=1e-3, critic_lr=1e-3, gamma=0.99, tau=0.005,
                  train_batch_size_per_learner=256, learning_starts=LEARNING_STARTS,
                  exploration_noise=0.1, policy_noise=0.2, noise_clip=0.5, policy_delay=2,
                  actor_hiddens=[256, 256], critic_hiddens=[256, 256],
                  updates_per_env_step=1.0)
        .env_runners(num_env_runners=0, rollout_fragment_length=64)
        .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=0)
        .debugging(seed=seed)
    )
    algo = config.build_algo()
    timers: dict = {}
    t0 = time.perf_counter()
    sampled = 0
    while sampled < steps:
        result = algo.train()
        sampled = result["env_runners"]["num_env_steps_sampled_lifetime"]
        for key, value in result.get("timers", {}).items():
            if isinstance(value, float):
                timers.setdefault(key, []).append(value)
    wall = time.perf_counter() - t0
    module = algo.get_module()
    low, high = module.action_space.low, module.action_space.high

    def act(obs):
        with torch.no_grad():
            a = module.forward_inference({Columns.OBS: torch.as_tensor(obs[None], dtype=torch.float32)})
        a = a[Columns.ACTIONS][0].numpy()
        return low + (a + 1.0) * (high - low) / 2.0

    ret = evaluate(act, seed)
    algo.stop()
    split = {k: float(np.sum(v)) for k, v in timers.items()
             if k in ("env_runner_sampling_timer", "replay_buffer_add_data_timer",
                      "replay_buffer_sampling_timer", "learner_update_timer",
                      "synch_env_connectors", "synch_weights")}
    return {"env_steps_per_s": sampled / wall, "eval_return": ret, "wall_s": wall,
            "env_steps": sampled, "time_split_s": split}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "td3_vs_sb3.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    runs = {"sb3": [], "rllib_av": []}
    for seed in args.seeds:
        runs["sb3"].append({"seed": seed, **run_sb3(args.steps, seed)})
        runs["rllib_av"].append({"seed": seed, **run_ours(args.steps, seed)})
        print(json.dumps({k: v[-1] for k, v in runs.items()}, default=float))

    def median(name, key):
        return statistics.median(r[key] for r in runs[name])

    summary = {
        "env": ENV, "env_steps": args.steps, "seeds": args.seeds,
        "sb3_steps_per_s_median": median("sb3", "env_steps_per_s"),
        "rllib_av_steps_per_s_median": median("rllib_av", "env_steps_per_s"),
        "speed_ratio_per_seed": [o["env_steps_per_s"] / s["env_steps_per_s"]
                                 for o, s in zip(runs["rllib_av"], runs["sb3"])],
        "sb3_eval_return_median": median("sb3", "eval_return"),
        "rllib_av_eval_return_median": median("rllib_av", "eval_return"),
        "rllib_av_eval_return_min": min(r["eval_return"] for r in runs["rllib_av"]),
        "runs": runs,
    }
    summary["speed_ratio_median"] = statistics.median(summary["speed_ratio_per_seed"])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
