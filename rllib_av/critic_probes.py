"""The critic probes of one moment of a run, run on the live algorithm and
appended to ``probes.jsonl`` (read back by rllib_av/health/probes.py).

One record: the reward pipeline check on the replay buffer
(health/replay_checks.py), the terminal-masking check (the critic on terminal
transitions, in the Learner) and the overestimation probe of the TD3 paper
(evaluation rollouts of the deterministic policy, in the Learner, where the
full module with its critic lives, local or remote alike; the math is
health/overestimation.py), with the bias also relative to the Q bound.
Training runs them every ``health.probe_every_iters`` iterations and at its
end; preflight at its end; the loop hands the bias to the exporter.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import deque
from typing import Callable, Dict, Optional

import numpy as np
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns

from rllib_av.algorithms.td3.td3_rl_module import Q1_PREDS
from rllib_av.health.overestimation import discounted_returns, usable_steps
from rllib_av.health.probes import PROBES_FILE
from rllib_av.health.q_bound import declared_reward_range, q_bound, training_reward_range
from rllib_av.health.replay_checks import (
    MASK_FIT_RATIO, _map, reward_pipeline_check, terminal_transitions,
)

logger = logging.getLogger(__name__)


def run_probes(algo, rc, run_dir: str, result: Dict) -> Dict:
    """Probe, append the record, return it. A failing probe is logged, never
    fatal: it must not end a long run."""
    try:
        return _run_probes(algo, rc, run_dir, result)
    except Exception:
        logger.exception("critic probes failed at iteration %s", result.get("training_iteration"))
        return {}


def _run_probes(algo, rc, run_dir: str, result: Dict) -> Dict:
    started = time.perf_counter()
    record = {"training_iteration": result.get("training_iteration"),
              "env_steps": result.get("env_runners", {}).get("num_env_steps_sampled_lifetime")}
    declared = declared_reward_range(rc.env, rc.training.reward_range)
    bound = None
    if declared is not None:
        r_range = training_reward_range(*declared, clip=rc.training.reward_clip,
                                        scale=algo.reward_processor.scale)
        bound = q_bound(*r_range, rc.training.gamma)
        record["q_bound"] = bound
        record.update(reward_pipeline_check(algo.replay_buffer, r_range))
    record.update(terminal_masking_check(algo))
    if rc.health.probe_episodes and not (rc.env.id == "driving" and rc.env.backend == "carla"):
        record.update(overestimation_probe(algo, rc, rc.health.probe_episodes))
    if bound and "overestimation_bias" in record:
        record["overestimation_ratio"] = record["overestimation_bias"] / bound
    record["probe_s"] = time.perf_counter() - started
    with open(os.path.join(run_dir, PROBES_FILE), "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


# -- terminal masking --------------------------------------------------------------
def terminal_masking_check(algo) -> Dict:
    batch = terminal_transitions(algo.replay_buffer)
    if batch is None:
        return {}

    def fit(learner):
        module = learner.module[DEFAULT_MODULE_ID].unwrapped()
        device = next(module.parameters()).device
        b = _map(batch, lambda x: torch.as_tensor(x, device=device))
        with torch.no_grad():
            q1 = module.forward_train(b)[Q1_PREDS].reshape(-1)
            q_next = module.forward_target(b)["q_next"].reshape(-1)
            r, disc = b[Columns.REWARDS].float(), b["discounts"].float()
            masked = (q1 - r).abs().mean().item()
            unmasked = (q1 - (r + disc * q_next)).abs().mean().item()
        return {"terminal_transitions": int(len(r)), "terminal_residual_masked": masked,
                "terminal_residual_unmasked": unmasked}

    out = first_result(algo.learner_group.foreach_learner(fit))
    out["terminal_masking"] = (
        "unmasked" if out["terminal_residual_unmasked"]
        < MASK_FIT_RATIO * out["terminal_residual_masked"] else "ok")
    return out


# -- overestimation ----------------------------------------------------------------
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


def rollout_bias(module, make_env, *, gamma: float, episodes: int, frame_stack: int,
                 reward_clip: Optional[float], reward_scale: float, seed: int = 12345) -> Dict:
    """Q1(s, mu(s)) vs discounted MC return over ``episodes`` rollouts."""
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
