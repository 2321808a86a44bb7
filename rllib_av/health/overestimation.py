"""The overestimation probe of the TD3 paper (Fujimoto et al. 2018, fig. 1).

On evaluation rollouts of the deterministic policy, compare the critic's
Q1(s, mu(s)) with the discounted Monte-Carlo return actually collected from s.
A critic that overestimates shows Q far above the return; the bias is
reported in the critic's training reward units (after clipping/scaling).

Runs inside the Learner (``learner_group.foreach_learner``), where the full
module with its critic lives, local or remote alike.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from typing import Callable, Dict, List, Optional

import numpy as np

from ray.rllib.core import DEFAULT_MODULE_ID


def make_env_factory(rc) -> Callable[[], object]:
    """A picklable factory for the run's env (DrivingEnv or a gymnasium id)."""
    env_id, env_config = rc.env.id, dataclasses.asdict(rc.env)

    def make():
        if env_id == "driving":
            from rllib_av.envs.driving_env import DrivingEnv

            return DrivingEnv(env_config)
        import gymnasium as gym

        return gym.make(env_id)

    return make


def discounted_returns(rewards: List[float], gamma: float) -> np.ndarray:
    """G_t = r_t + gamma G_{t+1} for every step of one finished episode."""
    out = np.zeros(len(rewards))
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def usable_steps(length: int, terminated: bool, gamma: float, tail: float = 0.25) -> int:
    """How many leading states of an episode have a usable MC return: all of a
    terminated one; of a truncated one only those whose cut-off tail weighs at
    most ``tail`` (gamma^remaining <= tail), so short step limits still leave some."""
    if terminated:
        return length
    horizon = math.ceil(math.log(tail) / math.log(gamma))
    return max(length - horizon, 0)


def rollout_bias(module, make_env, *, gamma: float, episodes: int, frame_stack: int,
                 reward_clip: Optional[float], reward_scale: float, seed: int = 12345) -> Dict:
    """Q1(s, mu(s)) vs discounted MC return over ``episodes`` rollouts."""
    import torch

    env = make_env()
    low, high = env.action_space.low, env.action_space.high
    device = next(module.parameters()).device
    q_all, g_all = [], []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            frames = None
            qs, rewards, terminated, truncated = [], [], False, False
            while not (terminated or truncated):
                # The module sees (frame_stack, 84, 84) image stacks, even of 1 frame.
                if isinstance(obs, dict) and "image" in obs:
                    if frames is None:  # zero frames before the start, as the connector pads
                        frames = deque([np.zeros_like(obs["image"])] * frame_stack,
                                       maxlen=frame_stack)
                    frames.append(obs["image"])
                    obs_in = {**obs, "image": np.stack(frames)}
                else:
                    obs_in = obs
                batch = _to_batch(obs_in, device)
                with torch.no_grad():
                    features = module.encoder(batch)
                    action = module.actor(features)
                    qs.append(float(module.critic.q1(features, action).reshape(-1)[0]))
                a = action[0].cpu().numpy()
                env_action = low + (a + 1.0) * 0.5 * (high - low)  # [-1, 1] -> env bounds
                obs, reward, terminated, truncated, _ = env.step(env_action)
                r = float(reward)
                if reward_clip is not None:
                    r = min(max(r, -reward_clip), reward_clip)
                rewards.append(r * reward_scale)
            keep = usable_steps(len(rewards), terminated, gamma)
            q_all.extend(qs[:keep])
            g_all.extend(discounted_returns(rewards, gamma)[:keep])
    finally:
        env.close()
    if not q_all:
        return {"overestimation_states": 0}
    q, g = np.asarray(q_all), np.asarray(g_all)
    return {"overestimation_states": len(q), "probe_q_mean": float(q.mean()),
            "probe_mc_return_mean": float(g.mean()), "overestimation_bias": float((q - g).mean())}


def _to_batch(obs, device):
    import torch

    if isinstance(obs, dict):
        return {k: torch.as_tensor(np.asarray(v)[None], device=device) for k, v in obs.items()}
    return torch.as_tensor(np.asarray(obs, np.float32)[None], device=device)


def overestimation_probe(algo, rc, episodes: int) -> Dict:
    """Run the probe on the (first) Learner's module."""
    make_env = make_env_factory(rc)
    kwargs = dict(gamma=rc.training.gamma, episodes=episodes, frame_stack=rc.training.frame_stack,
                  reward_clip=rc.training.reward_clip, reward_scale=algo.reward_processor.scale)

    def probe(learner):
        return rollout_bias(learner.module[DEFAULT_MODULE_ID].unwrapped(), make_env, **kwargs)

    return first_result(algo.learner_group.foreach_learner(probe))


def first_result(results):
    """The value of the first call in a ``foreach_learner`` answer."""
    for r in results:
        return r.get()
    raise RuntimeError("no learner answered")
