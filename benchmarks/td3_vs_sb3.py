"""rllib_av TD3 vs Stable-Baselines3 TD3 on Pendulum-v1, side by side in one process.

Same settings for both: MLP 256x256, batch 256, lr 1e-3, gamma 0.99, tau 0.005,
Gaussian exploration 0.1, target smoothing 0.2 / 0.5, policy delay 2,
uniform-random warm-up and learning start at 1000 steps, one gradient update
per env step, one torch thread. Reports env steps/s (whole run, warm-up
included), the deterministic eval return (10 episodes) after the budget, their
ratios, and where our wall time went (sampling, replay add, batch building,
torch update; the update's figure includes the batch building inside it).
The two advance in alternating 1000-step slices so machine noise hits both alike.

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


class SB3Run:
    def __init__(self, seed: int):
        from stable_baselines3 import TD3
        from stable_baselines3.common.noise import NormalActionNoise

        self.seed, self.wall, self.steps = seed, 0.0, 0
        self.model = TD3(
            "MlpPolicy", gym.make(ENV), learning_rate=1e-3, buffer_size=1_000_000,
            learning_starts=LEARNING_STARTS, batch_size=256, tau=0.005, gamma=0.99,
            train_freq=1, gradient_steps=1, policy_delay=2, target_policy_noise=0.2,
            target_noise_clip=0.5, action_noise=NormalActionNoise(np.zeros(1), 0.1 * np.ones(1)),
            policy_kwargs=dict(net_arch=[256, 256]), seed=seed, device="cpu", verbose=0)

    def advance(self, until: int) -> None:
        t0 = time.perf_counter()
        self.model.learn(total_timesteps=until - self.steps, reset_num_timesteps=False)
        self.wall += time.perf_counter() - t0
        self.steps = until

    def finish(self) -> dict:
        ret = evaluate(lambda o: self.model.predict(o, deterministic=True)[0], self.seed)
        return {"env_steps_per_s": self.steps / self.wall, "eval_return": ret, "wall_s": self.wall}


class Timed:
    """Accumulates wall time spent in one function (for the time split)."""

    def __init__(self, owner, name: str, split: dict, label: str):
        fn = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                split[label] = split.get(label, 0.0) + time.perf_counter() - t0

        setattr(owner, name, timed)


class OursRun:
    def __init__(self, seed: int):
        from rllib_av.algorithms.td3 import TD3Config

        config = (
            TD3Config().environment(ENV)
            .training(actor_lr=1e-3, critic_lr=1e-3, gamma=0.99, tau=0.005,
                      train_batch_size_per_learner=256,
                      num_steps_sampled_before_learning_starts=LEARNING_STARTS,
                      exploration_noise=0.1, policy_noise=0.2, noise_clip=0.5, policy_delay=2,
                      actor_hiddens=[256, 256], critic_hiddens=[256, 256],
                      updates_per_env_step=1.0)
            .env_runners(num_env_runners=0, rollout_fragment_length=64)
            .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=0)
            .debugging(seed=seed)
        )
        self.seed, self.wall, self.steps = seed, 0.0, 0
        self.algo = config.build_algo()
        self.split: dict = {}
        Timed(self.algo.env_runner, "sample", self.split, "sampling (EnvRunner)")
        learner = self.algo.learner_group._learner  # in this process: num_learners=0
        Timed(learner, "add_chunks", self.split, "replay add (learner)")
        Timed(learner.replay_sampler, "sample", self.split, "batch building (replay sample)")
        Timed(learner, "update_from_replay", self.split, "learner update (torch, sampling included)")

    def advance(self, until: int) -> None:
        t0 = time.perf_counter()
        while self.steps < until:
            result = self.algo.train()
            self.steps = result["env_runners"]["num_env_steps_sampled_lifetime"]
        self.wall += time.perf_counter() - t0

    def finish(self) -> dict:
        from ray.rllib.core.columns import Columns

        module = self.algo.get_module()
        low, high = module.action_space.low, module.action_space.high

        def act(obs):
            with torch.no_grad():
                out = module.forward_inference(
                    {Columns.OBS: torch.as_tensor(obs[None], dtype=torch.float32)})
            return low + (out[Columns.ACTIONS][0].numpy() + 1.0) * (high - low) / 2.0

        ret = evaluate(act, self.seed)
        self.algo.stop()
        split = {k: round(v, 3) for k, v in self.split.items()}
        split["other"] = round(self.wall - sum(self.split.values()), 3)
        return {"env_steps_per_s": self.steps / self.wall, "eval_return": ret,
                "wall_s": self.wall, "env_steps": self.steps, "time_split_s": split}


def run_pair(steps: int, seed: int, slice_steps: int = 1000):
    """Both learners advance in alternating slices so machine load hits both alike."""
    sb3, ours = SB3Run(seed), OursRun(seed)
    for until in range(slice_steps, steps + 1, slice_steps):
        sb3.advance(until)
        ours.advance(until)
    return sb3.finish(), ours.finish()


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
        sb3, ours = run_pair(args.steps, seed)
        runs["sb3"].append({"seed": seed, **sb3})
        runs["rllib_av"].append({"seed": seed, **ours})
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
