"""The critic probes of one moment of a run, run on the live algorithm and
appended to ``probes.jsonl`` (read back by rllib_av/health/probes.py).

One record: the reward pipeline check on the replay (health/replay_checks.py,
on the newest transitions of every learner's shard); the terminal-masking
check, which runs its shard's terminal transitions through the learner's own
Bellman targets, in the Learner (on them the target must be r exactly,
whatever the critic has learned); and the overestimation probe of the TD3
paper (evaluation rollouts of the deterministic policy through the run's own
connector pipelines, in the Learner, where the full module with its critic
lives, local or remote alike; rolled past the time limit where the env allows;
the math is health/overestimation.py). Rewards are in training units by the
run's one reward processor. Training runs them every
``health.probe_every_iters`` iterations and at its end, preflight spread over
its run (``ProbeSchedule``); the loop hands the record to the health monitor
(what it found wrong joins the verdict) and the bias to the exporter.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rllib_av.envs.env_settings import DRIVING_ENV_ID
from rllib_av.envs.gymnasium_ids import gymnasium_spec
from rllib_av.health.overestimation import (
    NEGLIGIBLE_TAIL, bias_record, returns_with_tail, tail_horizon,
)
from rllib_av.health.probes import PROBES_FILE
from rllib_av.health.q_bound import declared_reward_range, q_bound, training_reward_range
from rllib_av.health.replay_checks import RECENT, TERMINAL_BATCH, reward_pipeline_check
from rllib_av.replay.sampling import DISCOUNTS

logger = logging.getLogger(__name__)

# |target - r| on a terminal row above this (relative to max(1, |r|)) is a bootstrap.
TERMINAL_TOL = 1e-6


class ProbeSchedule:
    """When the training loop probes: every ``every_iters`` iterations (0:
    never), once past each of ``at_steps`` env steps, and at the end."""

    def __init__(self, every_iters: int, at_steps: Sequence[int] = ()):
        self.every = every_iters
        self.pending = sorted(at_steps)

    def due(self, iteration: int, env_steps: int, done: bool) -> bool:
        crossed = bool(self.pending) and env_steps >= self.pending[0]
        self.pending = [s for s in self.pending if s > env_steps]
        return done or crossed or bool(self.every and iteration % self.every == 0)


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
              "env_steps": int(result.get("env_runners", {}).get("num_env_steps_sampled_lifetime",
                                                                 0))}
    declared = declared_reward_range(rc.env, rc.training.reward_range)
    r_range = None
    if declared is not None:
        r_range = training_reward_range(*declared, clip=rc.training.reward_clip,
                                        scale=algo.reward_processor.scale)
        record["q_bound"] = q_bound(*r_range, rc.training.gamma)
        record.update(reward_pipeline_check(*algo.recent_training_rewards(RECENT), r_range))
    else:  # no declared range: what the critic trained on still bounds it (q_bound.py)
        rewards, _ = algo.recent_training_rewards(RECENT)
        if len(rewards):
            record["q_bound_observed"] = q_bound(float(rewards.min()), float(rewards.max()),
                                                 rc.training.gamma)
    record.update(terminal_masking_check(algo))
    if rc.health.probe_episodes and not (rc.env.id == DRIVING_ENV_ID
                                         and rc.env.backend == "carla"):
        record.update(overestimation_probe(algo, rc, rc.health.probe_episodes, r_range))
    record["probe_s"] = time.perf_counter() - started
    with open(os.path.join(run_dir, PROBES_FILE), "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


# -- terminal masking --------------------------------------------------------------
def terminal_masking_check(algo) -> Dict:
    """The (first) learner's own Bellman targets on its shard's newest terminal
    transitions (its update's code, ``TD3TorchLearner.bellman_targets``)
    against the rewards alone, where the replay lives."""
    scale = algo.reward_processor.scale

    def check(learner):
        batch = learner.replay_terminal_batch(TERMINAL_BATCH, scale)
        if batch is None:
            return {"terminal_masking": "unmeasured",
                    "terminal_masking_unmeasured": "no terminal transition in the replay (the "
                                                   "env only truncates, or none ended yet)"}
        return terminal_targets_check(learner, batch)

    return first_result(algo.learner_group.foreach_learner(check))


def terminal_targets_check(learner, batch) -> Dict:
    """On terminal rows the target must be r exactly: (1 - terminated) zeroes
    the bootstrap term, whatever the critic has learned. Not measurable when
    that term (gamma^m Q'(s', a')) is itself ~0: a target that kept it would
    look the same."""
    y = learner.bellman_targets(DEFAULT_MODULE_ID, batch).reshape(-1).double()
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    q_next = module.forward_target(batch)["q_next"].reshape(-1)
    r = batch[Columns.REWARDS].reshape(-1).double()
    term = (batch[DISCOUNTS].reshape(-1) * q_next).double().abs()
    ok = torch.isfinite(y) & torch.isfinite(term)
    if not ok.any():
        return {"terminal_masking": "unmeasured",
                "terminal_masking_unmeasured": "non-finite targets on every terminal row"}
    diff, r, term = (y - r).abs()[ok], r[ok], term[ok]
    out = {"terminal_transitions": int(ok.sum()),
           "terminal_target_max_diff": float(diff.max()),
           "terminal_bootstrap_abs_mean": float(term.mean())}
    if (diff > TERMINAL_TOL * r.abs().clamp(min=1.0)).any():
        out["terminal_masking"] = "unmasked"
    elif term.mean() <= TERMINAL_TOL * r.abs().mean().clamp(min=1.0):
        out["terminal_masking"] = "unmeasured"
        out["terminal_masking_unmeasured"] = (
            f"gamma^m Q'(s', a') is {float(term.mean()):.2g} on the {out['terminal_transitions']} "
            "terminal rows: a target that kept it would equal r too")
    else:
        out["terminal_masking"] = "ok"
    return out


# -- overestimation ----------------------------------------------------------------
def make_env_factory(rc) -> Tuple[Callable[[int], object], Optional[int]]:
    """A picklable factory for the run's env (DrivingEnv or a gymnasium id, with
    env.kwargs) whose time limit is raised by the factory's argument, and the
    run's own time limit (None when the env's is unknown: it cannot be raised)."""
    env_id, env_config, kwargs = rc.env.id, dataclasses.asdict(rc.env), dict(rc.env.kwargs)
    if env_id == DRIVING_ENV_ID:
        limit = rc.env.max_episode_steps
    else:
        limit = kwargs.get("max_episode_steps") or gymnasium_spec(env_id).max_episode_steps

    def make(extra_steps: int = 0):
        if env_id == DRIVING_ENV_ID:
            from rllib_av.envs.driving_env import DrivingEnv

            return DrivingEnv({**env_config, "max_episode_steps": limit + extra_steps})
        import gymnasium as gym

        if limit:
            return gym.make(env_id, **{**kwargs, "max_episode_steps": limit + extra_steps})
        return gym.make(env_id, **kwargs)

    return make, limit


def rollout_bias(module, make_env, *, limit: Optional[int], config, gamma: float,
                 episodes: int, reward_processor,
                 reward_range: Optional[Tuple[float, float]], seed: int = 12345) -> Dict:
    """Q1(s, mu(s)) vs the discounted return over ``episodes`` rollouts.

    Observations reach the module and actions the env through the run's own
    RLlib connector pipelines (``config``'s: frame stacking, action unsquashing),
    exactly as on an EnvRunner; returns are in training units
    (``reward_processor``). Each rollout runs past the run's time limit
    ``limit`` until the rest of the return weighs at most NEGLIGIBLE_TAIL
    (where the env allows); only states before ``limit`` (those training sees)
    are scored. ``reward_range``: the declared per-step range in training
    units, if any: it bounds what a rollout cut short leaves out."""
    extra = tail_horizon(gamma)
    tail_range = None if reward_range is None else (reward_range[0] / (1 - gamma),
                                                    reward_range[1] / (1 - gamma))
    env = make_env(extra)
    device = next(module.parameters()).device
    env_to_module = config.build_env_to_module_connector(env=env, device=device)
    module_to_env = config.build_module_to_env_connector(env=env)
    q_all, lo_all, hi_all, lengths, nonfinite = [], [], [], [], 0
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
            nonfinite += int((~np.isfinite(np.asarray(rewards, np.float64))).sum())
            g_lo, g_hi, usable = returns_with_tail(train_rewards.tolist(), gamma,
                                                   episode.is_terminated, tail_range)
            keep = np.flatnonzero(usable[:min(len(rewards), limit or len(rewards))])
            q_all.extend(np.asarray(qs)[keep])
            lo_all.extend(g_lo[keep])
            hi_all.extend(g_hi[keep])
            lengths.append(len(rewards))
    finally:
        env.close()
    # The env's own rewards, seen where nothing drops them: NaN/inf here is the env's.
    found = {"probe_steps": int(sum(lengths)), "probe_nonfinite_rewards": nonfinite}
    if not q_all:
        why = (f"the env returned {nonfinite} NaN/inf rewards in {sum(lengths)} steps, and a "
               "return through one is unknown" if nonfinite else
               f"rollouts ended by truncation after {max(lengths)} steps, gamma {gamma:g} needs "
               f"~{extra} more for the rest to weigh <= {NEGLIGIBLE_TAIL:g}, the env could not "
               "run past its time limit, and no reward range bounds the rest "
               "(training.reward_range)")
        return {**found, "overestimation_states": 0,
                "overestimation_unmeasured": f"no state has a usable return: {why}"}
    step_scale = max(abs(reward_range[0]), abs(reward_range[1])) if reward_range else 0.0
    return {**found, **bias_record(np.asarray(q_all), np.asarray(lo_all), np.asarray(hi_all),
                                   step_scale)}


def overestimation_probe(algo, rc, episodes: int,
                         r_range: Optional[Tuple[float, float]]) -> Dict:
    """Run the probe on the (first) Learner's module; ``r_range``: the declared
    per-step reward range in training units (bounds returns cut short), if any."""
    make_env, limit = make_env_factory(rc)
    kwargs = dict(limit=limit, gamma=rc.training.gamma, episodes=episodes,
                  reward_processor=algo.reward_processor, reward_range=r_range)

    def probe(learner):
        return rollout_bias(learner.module[DEFAULT_MODULE_ID].unwrapped(), make_env,
                            config=learner.config, **kwargs)

    return first_result(algo.learner_group.foreach_learner(probe))


def first_result(results):
    """The value of the first call in a ``foreach_learner`` answer."""
    for r in results:
        return r.get()
    raise RuntimeError("no learner answered")
