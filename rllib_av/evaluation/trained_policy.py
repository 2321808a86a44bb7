"""The deterministic policy of a TD3 checkpoint, run through RLlib's connectors.

The observation goes through the same env-to-module pipeline as in training
(frame stacking, tensor conversion, any stateful filters restored from the
checkpoint), then ``forward_inference`` (no exploration noise), then the
module-to-env pipeline, exactly as a ``SingleAgentEnvRunner`` does it. No
Algorithm is built: that would start the run's Prometheus exporter and
TensorBoard writer and load the replay buffer, none of which evaluation needs.
"""

from __future__ import annotations

import os

import numpy as np
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rllib_av.config_schema import ConfigError
from rllib_av.evaluation.evaluation_plan import checkpoint_run_config
from rllib_av.run_config import RunConfig


class TrainedPolicy:
    name = "td3"

    def __init__(self, checkpoint: str, env, rc: RunConfig = None):
        from rllib_av.training import build_td3_config

        rc = rc or checkpoint_run_config(checkpoint)
        config = build_td3_config(rc)
        self.module = RLModule.from_checkpoint(os.path.join(
            checkpoint, "learner_group", "learner", "rl_module", DEFAULT_MODULE_ID))
        self.module.eval()
        expected = self.module.observation_space["state"].shape
        if env.observation_space["state"].shape != expected:
            raise ConfigError(f"--scenario: its state vector has shape "
                              f"{env.observation_space['state'].shape}, the checkpoint's "
                              f"policy expects {expected} (env.num_waypoints must match)")
        self._env_to_module = config.build_env_to_module_connector(env=env)
        self._module_to_env = config.build_module_to_env_connector(env=env)
        runner = os.path.join(checkpoint, "env_runner")
        for name, pipeline in (("env_to_module_connector", self._env_to_module),
                               ("module_to_env_connector", self._module_to_env)):
            if os.path.isdir(os.path.join(runner, name)):
                pipeline.restore_from_path(os.path.join(runner, name))
        self._spaces = (env.observation_space, env.action_space)
        self._episode = None
        self._last_action = None

    def reset(self) -> None:
        self._episode = None

    def act(self, obs: dict, info: dict) -> np.ndarray:
        if self._episode is None:
            self._episode = SingleAgentEpisode(observation_space=self._spaces[0],
                                               action_space=self._spaces[1])
            self._episode.add_env_reset(observation=obs, infos=info)
        else:  # rewards and dones do not reach the policy
            self._episode.add_env_step(observation=obs, action=self._last_action,
                                       reward=0.0, infos=info)
        episodes = [self._episode]
        shared = {}
        batch = self._env_to_module(rl_module=self.module, episodes=episodes, explore=False,
                                    shared_data=shared)
        out = self.module.forward_inference(batch)
        out = self._module_to_env(rl_module=self.module, batch=out, episodes=episodes,
                                  explore=False, shared_data=shared)
        self._last_action = np.asarray(out[Columns.ACTIONS][0], np.float32)
        return np.asarray(out.get(Columns.ACTIONS_FOR_ENV, out[Columns.ACTIONS])[0], np.float32)
