"""The critic probes of one moment of a run, run on the live algorithm and
appended to ``probes.jsonl`` (read back by rllib_av/health/probes.py).

One record: the reward pipeline check on the replay (health/replay_checks.py,
on the newest transitions of every learner's shard), the terminal-masking
check (the critic on its shard's terminal transitions, in the Learner) and the
overestimation probe of the TD3 paper (evaluation rollouts of the
deterministic policy through the run's own connector pipelines, in the
Learner, where the full module with its critic lives, local or remote alike;
the math is health/overestimation.py), with the bias also relative to the Q
bound. Rewards are in training units by the run's one reward processor.
Training runs them every ``health.probe_every_iters`` iterations and at its
end; preflight at its end; the loop hands the bias to the exporter.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Callable, Dict

import numpy as np
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rllib_av.algorithms.td3.td3_rl_module import Q1_PREDS
from rllib_av.health.overestimation import discounted_returns, usable_steps
from rllib_av.health.probes import PROBES_FILE
from rllib_av.health.q_bound import declared_reward_range, q_bound, training_reward_range
from rllib_av.health.replay_checks import (
    MASK_FIT_RATIO, RECENT, TERMINAL_BATCH, reward_pipeline_check,
)
from rllib_av.replay.sampling import DISCOUNTS

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
        record.update(reward_pipeline_check(*algo.recent_training_rewards(RECENT), r_range))
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
    """Fits the critic's Q1 on the (first) learner's newest terminal transitions,
    taken from its replay shard where it lives."""
    scale = algo.reward_processor.scale

    def fit(learner):
        batch = learner.replay_terminal_batch(TERMINAL_BATCH, scale)
        if batch is None:
            return {}
        module = learner.module[DEFAULT_MODULE_ID].unwrapped()
        with torch.no_grad():
            q1 = module.forward_train(batch)[Q1_PREDS].reshape(-1)
            q_next = module.forward_target(batch)["q_next"].reshape(-1)
            r, disc = batch[Columns.REWARDS].float(), batch[DISCOUNTS].float()
            masked = (q1 - r).abs().mean().item()
            unmasked = (q1 - (r + disc * q_next)).abs().mean().item()
        return {"terminal_transitions": int(len(r)), "terminal_residual_masked": masked,
                "terminal_residual_unmasked": unmasked}

    out = first_result(algo.learner_group.foreach_learner(fit))
    if out:
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


def rollout_bias(module, make_env, *, config, gamma: float, episodes: int, reward_processor,
                 seed: int = 12345) -> Dict:
    """Q1(s, mu(s)) vs discounted MC return over ``episodes`` rollouts.

    Observations reach the module and actions the env through the run's own
    RLlib connector pipelines (``config``'s: frame stacking, action unsquashing),
    exactly as on an EnvRunner; returns are in training units (``reward_processor``).
    """
    env = make_env()
    device = next(module.parameters()).device
    env_to_module = config.build_env_to_module_connector(env=env, device=device)
    module_to_env = config.build_module_to_env_connector(env=env)
    q_all, g_all = [], []
    try:
        for i in range(episodes):
            obs, info = env.reset(seed=seed + i)
            episode = SingleAgentEpisode(observation_space=env.observation_space,
                                         action_space=env.action_space)
            episode.add_env_reset(observation=obs, infos=info)
            qs, rewards = [], []
            while not episode.is_done:
                shared = {}
                batch = env_to_module(rl_module=module, episodes=[episode], explore=False,
                                      shared_data=shared)
                with torch.no_grad():
                    features = module.encoder(batch[Columns.OBS])
                    action = module.actor(features)
                    qs.append(float(module.critic.q1(features, action).reshape(-1)[0]))
                out = module_to_env(rl_module=module, batch={Columns.ACTIONS: action},
                                    episodes=[episode], explore=False, shared_data=shared)
                obs, reward, terminated, truncated, info = env.step(out[Columns.ACTIONS_FOR_ENV][0])
                episode.add_env_step(observation=obs, action=out[Columns.ACTIONS][0],
                                     reward=reward, infos=info, terminated=terminated,
                                     truncated=truncated)
                rewards.append(reward)
            train_rewards = reward_processor.process(np.asarray(rewards, np.float64))
            keep = usable_steps(len(rewards), episode.is_terminated, gamma)
            q_all.extend(qs[:keep])
            g_all.extend(discounted_returns(train_rewards.tolist(), gamma)[:keep])
    finally:
        env.close()
    if not q_all:
        return {"overestimation_states": 0}
    q, g = np.asarray(q_all), np.asarray(g_all)
    return {"overestimation_states": len(q), "probe_q_mean": float(q.mean()),
            "probe_mc_return_mean": float(g.mean()), "overestimation_bias": float((q - g).mean())}


def overestimation_probe(algo, rc, episodes: int) -> Dict:
    """Run the probe on the (first) Learner's module."""
    make_env = make_env_factory(rc)
    kwargs = dict(gamma=rc.training.gamma, episodes=episodes,
                  reward_processor=algo.reward_processor)

    def probe(learner):
        return rollout_bias(learner.module[DEFAULT_MODULE_ID].unwrapped(), make_env,
                            config=learner.config, **kwargs)

    return first_result(algo.learner_group.foreach_learner(probe))


def first_result(results):
    """The value of the first call in a ``foreach_learner`` answer."""
    for r in results:
        return r.get()
    raise RuntimeError("no learner answered")
