"""The overestimation probe sees what the critic is trained on (issue 15.5):
observations through the run's own connector pipeline (4-frame stacks,
zero-padded before the episode start), actions unsquashed to the env's bounds
by RLlib's module-to-env pipeline, returns in training units (the run's
reward processor: clipped here)."""

from collections import deque

import gymnasium as gym
import numpy as np
import torch

from rllib_av.algorithms.td3 import TD3Config
from rllib_av.critic_probes import rollout_bias
from rllib_av.health.overestimation import discounted_returns
from rllib_av.replay.reward_processing import RewardProcessor

STEPS, GAMMA, CLIP = 6, 0.9, 0.5
LOW, HIGH = np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32)


class ProbeEnv(gym.Env):
    """Frames that change every step, an action box that is not [-1, 1], and
    rewards beyond the clip; remembers the actions it was given."""

    observation_space = gym.spaces.Dict({
        "image": gym.spaces.Box(0, 255, (84, 84), np.uint8),
        "state": gym.spaces.Box(-10, 10, (3,), np.float32),
    })
    action_space = gym.spaces.Box(LOW, HIGH, dtype=np.float32)
    actions = []

    def _obs(self):
        image = np.random.default_rng(self.t).integers(0, 256, (84, 84), dtype=np.uint8)
        return {"image": image, "state": np.full(3, self.t / 10, np.float32)}

    def reset(self, *, seed=None, options=None):
        self.t = 0
        ProbeEnv.actions = []
        return self._obs(), {}

    def step(self, action):
        ProbeEnv.actions.append(np.asarray(action, np.float32))
        self.t += 1
        return self._obs(), float(action[1]), self.t == STEPS, False, {}


def test_probe_uses_connectors_and_reward_processor():
    config = (TD3Config().environment(ProbeEnv)
              .training(gamma=GAMMA, frame_stack=4, image_encoder="nature_cnn",
                        replay_buffer_config={"capacity": 100}, actor_hiddens=[16],
                        critic_hiddens=[16]))
    stacked = gym.spaces.Dict({**ProbeEnv.observation_space.spaces,
                               "image": gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)})
    config.environment(observation_space=stacked, action_space=ProbeEnv.action_space)
    module = config.build_learner().module["default_policy"].unwrapped()
    processor = RewardProcessor(GAMMA, clip=CLIP)
    out = rollout_bias(module, lambda extra_steps: ProbeEnv(), limit=None, config=config,
                       gamma=GAMMA, episodes=1, reward_processor=processor, reward_range=None)
    probe_actions = np.array(ProbeEnv.actions)

    # The contract, by hand: zero frames before the start, unsquashed actions, clipped rewards.
    env = ProbeEnv()
    obs, _ = env.reset()
    frames = deque([np.zeros((84, 84), np.uint8)] * 4, maxlen=4)
    qs, rewards, done = [], [], False
    while not done:
        frames.append(obs["image"])
        batch = {"image": torch.as_tensor(np.stack(frames)[None]),
                 "state": torch.as_tensor(obs["state"][None])}
        with torch.no_grad():
            features = module.encoder(batch)
            a = module.actor(features)
            qs.append(float(module.critic.q1(features, a)[0]))
        env_action = LOW + (a[0].numpy() + 1.0) * 0.5 * (HIGH - LOW)
        obs, r, done, _, _ = env.step(env_action)
        rewards.append(min(max(r, -CLIP), CLIP))
    np.testing.assert_allclose(probe_actions, np.array(ProbeEnv.actions), rtol=1e-5)
    assert out["overestimation_states"] == STEPS
    assert np.isclose(out["probe_q_mean"], np.mean(qs), rtol=1e-5)
    assert np.isclose(out["probe_mc_return_mean"], discounted_returns(rewards, GAMMA).mean())
    assert max(rewards) == CLIP  # the clip was in play
