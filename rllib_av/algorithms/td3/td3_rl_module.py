"""TD3's torch RLModule: a deterministic tanh actor, twin critics, their targets.

Actions live in the normalized box [-1, 1]; RLlib's NormalizeAndClipActions
connector unsquashes them to the env's bounds, and episodes keep the normalized
ones, which is what the learner trains on.

EnvRunners build this module with ``inference_only=True``: they get the actor
and nothing else (see ``get_non_inference_attributes``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch

from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from rllib_av.algorithms.td3.networks import Actor, ObsEncoder, TwinCritic

# Keys of `_forward_train`'s output.
FEATURES = "features"
Q1_PREDS = "q1_preds"
Q2_PREDS = "q2_preds"


class TD3TorchRLModule(TorchRLModule, TargetNetworkAPI, InferenceOnlyAPI):
    """model_config keys: actor_hiddens, critic_hiddens, image_encoder, exploration_noise,
    random_warmup_steps (uniform actions while the global env step count is below)."""

    def setup(self):
        cfg = self.model_config
        self.action_dim = int(self.action_space.shape[0])
        self.encoder = ObsEncoder(self.observation_space, cfg["image_encoder"])
        self.actor = Actor(self.encoder.out_dim, self.action_dim, cfg["actor_hiddens"])
        if not self.inference_only:
            self.critic = TwinCritic(self.encoder.out_dim, self.action_dim, cfg["critic_hiddens"])

    def policy(self, obs) -> torch.Tensor:
        """mu(s)."""
        return self.actor(self.encoder(obs))

    # -- acting --------------------------------------------------------------

    def _forward_inference(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        with torch.no_grad():
            return {Columns.ACTIONS: self.policy(batch[Columns.OBS])}

    def _forward_exploration(self, batch: Dict[str, Any], t: int = None, **kwargs) -> Dict[str, Any]:
        """Gaussian exploration noise; uniform-random actions during warm-up.

        ``t`` is the global env-step count RLlib's EnvRunner passes in.
        """
        with torch.no_grad():
            action = self.policy(batch[Columns.OBS])
            if t is not None and t < self.model_config["random_warmup_steps"]:
                action = torch.rand_like(action) * 2.0 - 1.0
            else:
                noise = torch.randn_like(action) * self.model_config["exploration_noise"]
                action = (action + noise).clamp(-1.0, 1.0)
        return {Columns.ACTIONS: action}

    def _forward_train(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        features = self.encoder(batch[Columns.OBS])
        q1, q2 = self.critic(features, batch[Columns.ACTIONS])
        return {FEATURES: features, Q1_PREDS: q1, Q2_PREDS: q2}

    # -- targets ---------------------------------------------------------------

    def make_target_networks(self) -> None:
        self.target_encoder = make_target_network(self.encoder)
        self.target_actor = make_target_network(self.actor)
        self.target_critic = make_target_network(self.critic)

    def get_target_network_pairs(self) -> List[Tuple[torch.nn.Module, torch.nn.Module]]:
        return [(self.encoder, self.target_encoder), (self.actor, self.target_actor),
                (self.critic, self.target_critic)]

    def forward_target(self, batch: Dict[str, Any], policy_noise: float = 0.0,
                       noise_clip: float = 0.0) -> Dict[str, Any]:
        """min(Q1', Q2')(s', a') with target policy smoothing on a' (TD3 eq. 14-15).

        Expects ``batch[Columns.NEXT_OBS]``; returns the smoothed next action and
        the clipped double-Q value.
        """
        with torch.no_grad():
            next_features = self.target_encoder(batch[Columns.NEXT_OBS])
            next_action = self.target_actor(next_features)
            noise = (torch.randn_like(next_action) * policy_noise).clamp(-noise_clip, noise_clip)
            next_action = (next_action + noise).clamp(-1.0, 1.0)
            q1, q2 = self.target_critic(next_features, next_action)
            return {Columns.ACTIONS: next_action, "q_next": torch.minimum(q1, q2)}

    def get_non_inference_attributes(self) -> List[str]:
        return ["critic", "target_encoder", "target_actor", "target_critic"]
