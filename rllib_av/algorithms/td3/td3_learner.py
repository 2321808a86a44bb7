"""TD3's torch Learner (Fujimoto et al. 2018), with critic health on every update.

The learner owns its replay shard, on its own device (rllib_av/replay/): the
driver hands it compact episode chunks (``add_chunks``), and
``update_from_replay(n)`` makes ``n`` gradient steps, each on a batch sampled
right there (index gathers on the GPU when the learner has one). One call for
many updates keeps the update-to-data ratio without paying RLlib's per-call
overhead per gradient step. RLlib's ``update(batch=...)`` still works for a
batch built elsewhere: ``n * train_batch_size`` rows, consecutive slices.
With several learners each samples its own shard and gradients are averaged
(data_parallel.py).

Each gradient step:
  1. y = r + gamma^n * min(Q1', Q2')(s', clip(mu'(s') + clip(eps, -c, c), -1, 1)) * (1 - terminated)
     (truncation does not cut the bootstrap: only ``terminateds`` masks it);
  2. critic step on MSE(Q1, y) + MSE(Q2, y);
  3. every ``policy_delay``-th critic step (counted in gradient steps): actor
     step on -Q1(s, mu(s)), then Polyak-average all target networks with tau.
``backward(inputs=...)`` confines each loss's gradients to its own network, so
the actor loss never writes into the critic's gradients.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F

from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.rl_module.apis import TargetNetworkAPI
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    MODULE_TRAIN_BATCH_SIZE_MEAN,
    NUM_ENV_STEPS_TRAINED,
    NUM_ENV_STEPS_TRAINED_LIFETIME,
    NUM_MODULE_STEPS_TRAINED,
    NUM_MODULE_STEPS_TRAINED_LIFETIME,
    WEIGHTS_SEQ_NO,
)
from ray.rllib.utils.typing import ModuleID, ResultDict

from rllib_av.algorithms.td3 import data_parallel
from rllib_av.algorithms.td3.augmentation import random_shift_obs
from rllib_av.algorithms.td3.networks import IMAGE_KEY, encoder_inputs
from rllib_av.algorithms.td3.td3_rl_module import FEATURES, Q1_PREDS, Q2_PREDS
from rllib_av.config_schema import ConfigError
# The per-update statistics (in stacking order) and their per-iteration
# reductions come from the one spec.
from rllib_av.health.statistics import ACTOR_STATS, CRITIC_STATS
from rllib_av.replay.episode_chunk import BOX_KEY, EpisodeChunk
from rllib_av.replay.sampling import DISCOUNTS, TransitionSampler, rows_of
from rllib_av.replay.storage import (
    ReplayStorage, device_free_bytes, load_state, save_state, slot_bytes,
)

TERMINATEDS = Columns.TERMINATEDS

ACTOR, CRITIC = "actor", "critic"

NUM_UPDATES_LIFETIME = "num_updates_lifetime"
NUM_ACTOR_UPDATES_LIFETIME = "num_actor_updates_lifetime"
NONFINITE_LOSS = "nonfinite_loss"
NONFINITE_GRADS = "nonfinite_grads"
POLICY_NOISE = "policy_noise"  # the target smoothing noise in effect


def polyak_update(source: torch.nn.Module, target: torch.nn.Module, tau: float) -> None:
    """target <- tau * source + (1 - tau) * target, in place."""
    targets = list(target.parameters())
    if targets:  # a Box observation's encoder is a parameterless flatten
        with torch.no_grad():
            torch._foreach_lerp_(targets, list(source.parameters()), tau)


def td3_targets(rewards, discounts, terminateds, q_next):
    """y = r + discount * (1 - terminated) * min(Q1', Q2')."""
    return rewards + discounts * (1.0 - terminateds.float()) * q_next


class TD3TorchLearner(TorchLearner):
    def build(self) -> None:
        super().build()
        self.module.foreach_module(
            lambda mid, mod: mod.make_target_networks() if isinstance(mod, TargetNetworkAPI) else None
        )
        self._data_parallel = data_parallel.world_size() > 1
        if self._data_parallel:
            self.module.foreach_module(lambda mid, mod: data_parallel.broadcast_from_first(mod))
        # Critic gradient steps per module; decides the delayed actor/target updates.
        # Part of the learner state, so a restored run keeps its phase.
        self._critic_steps: Dict[ModuleID, int] = {mid: 0 for mid in self.module.keys()}
        # Target policy smoothing noise, when the divergence guard has raised it
        # (None: the config's policy_noise).
        self.policy_noise_override: Optional[float] = None
        self._build_replay()

    def _make_modules_ddp_if_necessary(self) -> None:
        """No DDP wrapper: gradients are averaged per optimizer step (data_parallel.py)."""

    # -- the replay shard ----------------------------------------------------------

    def _build_replay(self) -> None:
        """This learner's replay shard, preallocated on its device (an oversized
        buffer fails here, at start, not hours into a run)."""
        config = self.config
        module = self.module[DEFAULT_MODULE_ID].unwrapped()
        space, action_dim = module.observation_space, int(module.action_space.shape[0])
        keys = encoder_inputs(space, config.image_encoder)
        if keys is None:
            leaves = {BOX_KEY: (space.shape, space.dtype)}
        else:  # stacked leaves keep single frames: (frames, H, W) -> (H, W)
            leaves = {k: (space[k].shape[1:] if k == IMAGE_KEY else space[k].shape, space[k].dtype)
                      for k in keys}
        capacity = config.replay_buffer_capacity // max(1, config.num_learners)
        per_slot = slot_bytes(leaves, action_dim)
        free = device_free_bytes(torch.device(self._device))
        if capacity * per_slot > free:
            raise ConfigError(
                f"training.buffer_size: {config.replay_buffer_capacity} is not allowed; a replay "
                f"shard of {capacity} transitions x {per_slot} B needs "
                f"{capacity * per_slot / 2**30:.1f} GiB on the learner's {self._device}, which has {free / 2**30:.1f} GiB free; expected "
                f"<= {free // per_slot * max(1, config.num_learners)}")
        self.replay_storage = ReplayStorage(capacity, device=self._device,
                                            padded_keys={IMAGE_KEY} & set(leaves))
        self.replay_storage.allocate(leaves, action_dim)
        seed = None if config.seed is None else config.seed + self._learner_index
        self.replay_sampler = TransitionSampler(
            self.replay_storage, gamma=config.gamma, frame_stack=config.frame_stack,
            reward_clip=config.reward_clip, seed=seed)

    @property
    def shard_index(self) -> int:
        """Which replay shard this learner owns."""
        return self._learner_index

    def add_chunks(self, chunks: Iterable[EpisodeChunk]) -> int:
        """Store episode chunks in this learner's shard; returns transitions stored."""
        return self.replay_storage.add_chunks(chunks)

    def save_replay(self, path: str) -> None:
        save_state({**self.replay_storage.get_state(),
                    "sampler_rng": self.replay_sampler.get_state()}, path)

    def load_replay(self, path: str) -> None:
        state = load_state(path)
        self.replay_sampler.set_state(state.pop("sampler_rng"))
        self.replay_storage.set_state(state)

    def replay_terminal_batch(self, limit: int, reward_scale: float) -> Optional[Dict[str, Any]]:
        """Up to ``limit`` of the newest terminal transitions, as a training batch."""
        slots = self.replay_storage.terminal_slots(limit)
        return self.replay_sampler.transitions(slots, 1, reward_scale) if len(slots) else None

    def configure_optimizers_for_module(self, module_id: ModuleID, config=None) -> None:
        module = self._module[module_id]
        for name, nets, lr, l2 in (
            (ACTOR, [module.actor], config.actor_lr, 0.0),
            # The shared encoder learns from the critic loss only.
            (CRITIC, [module.encoder, module.critic], config.critic_lr, config.critic_l2),
        ):
            params = [p for net in nets for p in self.get_parameters(net)]
            # Adam's weight_decay is L2 regularization added to the gradient; the fused
            # kernel is ~2x faster than foreach for these small nets.
            optim = torch.optim.Adam(params, lr=lr, weight_decay=l2, fused=True)
            self.register_optimizer(module_id=module_id, optimizer_name=name, optimizer=optim,
                                    params=params, lr_or_lr_schedule=lr)

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        """RLlib's loss hook: the critic loss MSE(Q1, y) + MSE(Q2, y)."""
        return self._critic_loss(module_id, config, batch, fwd_out)[0]

    def _critic_loss(self, module_id, config, batch, fwd_out):
        """(critic loss, Bellman targets y)."""
        module = self.module[module_id].unwrapped()
        target = module.forward_target(batch, self.policy_noise(config), config.noise_clip)
        y = td3_targets(batch[Columns.REWARDS], batch[DISCOUNTS], batch[TERMINATEDS],
                        target["q_next"])
        q1, q2 = fwd_out[Q1_PREDS], fwd_out[Q2_PREDS]
        return F.mse_loss(q1, y) + F.mse_loss(q2, y), y

    def bellman_targets(self, module_id: ModuleID, batch) -> torch.Tensor:
        """The targets y the critic update computes for ``batch`` (through the
        same ``_critic_loss``), for checks of the update itself."""
        module = self.module[module_id].unwrapped()
        with torch.no_grad():
            config = self.config.get_config_for_module(module_id)
            return self._critic_loss(module_id, config, batch, module.forward_train(batch))[1]

    # -- the update --------------------------------------------------------------

    def policy_noise(self, config) -> float:
        override = self.policy_noise_override
        return config.policy_noise if override is None else override

    def update_from_replay(self, num_updates: int, *, reward_scale: float = 1.0,
                           timesteps: Optional[Dict[str, Any]] = None) -> ResultDict:
        """``num_updates`` gradient steps, each on a batch sampled from this
        learner's shard, rewards in training units at ``reward_scale``. RLlib's
        ``update`` for data that is already here; returns the reduced metrics."""
        self._check_is_built()
        timesteps = timesteps or {}
        self.before_gradient_based_update(timesteps=timesteps)
        self._weights_seq_no += 1
        for module_id in self.module.keys():
            config = self.config.get_config_for_module(module_id)
            size = config.train_batch_size_per_learner
            batches = self.replay_sampler.batches(num_updates, size, config.n_step, reward_scale)
            loss = self._update_module(module_id, batches)
            self.metrics.log_value((module_id, self.TOTAL_LOSS_KEY), loss, window=1)
            self._log_steps_trained(module_id, num_updates * size)
        self.after_gradient_based_update(timesteps=timesteps)
        return self.metrics.reduce()

    def _log_steps_trained(self, module_id: ModuleID, steps: int) -> None:
        """RLlib's steps-trained counters (Learner._log_steps_trained_metrics) for
        ``steps`` transitions sampled here."""
        self.metrics.log_value((module_id, WEIGHTS_SEQ_NO), self._weights_seq_no, window=1)
        self.metrics.log_value((module_id, MODULE_TRAIN_BATCH_SIZE_MEAN), steps, reduce="mean")
        for key in (module_id, ALL_MODULES):
            self.metrics.log_value((key, NUM_MODULE_STEPS_TRAINED), steps, reduce="sum")
            self.metrics.log_value((key, NUM_MODULE_STEPS_TRAINED_LIFETIME), steps,
                                   reduce="lifetime_sum")
        self.metrics.log_value((ALL_MODULES, NUM_ENV_STEPS_TRAINED), steps, reduce="sum")
        self.metrics.log_value((ALL_MODULES, NUM_ENV_STEPS_TRAINED_LIFETIME), steps,
                               reduce="lifetime_sum")

    def _update(self, batch: Dict[ModuleID, Any], **kwargs):
        """RLlib's update path: a batch built elsewhere, in consecutive slices."""
        loss_per_module = {}
        for module_id, module_batch in batch.items():
            size = self.config.get_config_for_module(module_id).train_batch_size_per_learner
            n = len(module_batch[Columns.REWARDS]) // size
            slices = (rows_of(module_batch, i * size, (i + 1) * size) for i in range(n))
            loss_per_module[module_id] = self._update_module(module_id, slices)
        return {}, loss_per_module, {}

    def _update_module(self, module_id: ModuleID, batches: Iterable) -> torch.Tensor:
        """One gradient step per batch of ``batches``; returns the last critic loss."""
        config = self.config.get_config_for_module(module_id)
        critic_rows: List[torch.Tensor] = []
        actor_rows: List[torch.Tensor] = []
        encoder = self.module[module_id].unwrapped().encoder
        augment = config.image_augmentation and encoder.encodes_images
        for minibatch in batches:
            if augment:  # DrQ: fresh random shifts of obs and next_obs every gradient step
                minibatch = random_shift_obs(minibatch)
            features, stats = self._critic_step(module_id, config, minibatch)
            critic_rows.append(stats)
            self._critic_steps[module_id] += 1
            if self._critic_steps[module_id] % config.policy_delay == 0:
                actor_rows.append(self._actor_step(module_id, config, features.detach()))
                module = self.module[module_id].unwrapped()
                for source, target in module.get_target_network_pairs():
                    polyak_update(source, target, config.tau)
        self._log_stats(module_id, CRITIC_STATS, critic_rows)
        self._log_stats(module_id, ACTOR_STATS, actor_rows)
        self.metrics.log_value((module_id, POLICY_NOISE), self.policy_noise(config), window=1)
        if self._learner_index == 0:  # data-parallel learners make the same updates together
            self.metrics.log_value((module_id, NUM_UPDATES_LIFETIME), len(critic_rows),
                                   reduce="lifetime_sum")
            self.metrics.log_value((module_id, NUM_ACTOR_UPDATES_LIFETIME), len(actor_rows),
                                   reduce="lifetime_sum")
        return (critic_rows[-1][CRITIC_STATS_INDEX["critic_loss"]] if critic_rows
                else torch.zeros((), device=self._device))

    def _critic_step(self, module_id, config, batch):
        """Returns the (pre-step) encoder features for the actor step, and the stats row."""
        module = self.module[module_id].unwrapped()
        fwd_out = module.forward_train(batch)
        loss, y = self._critic_loss(module_id, config, batch, fwd_out)
        grad_norm = self._step(module_id, CRITIC, loss, config.critic_grad_clip)
        with torch.no_grad():
            q1, q2 = fwd_out[Q1_PREDS], fwd_out[Q2_PREDS]
            values = {"q1_mean": q1.mean(), "q2_mean": q2.mean(), "q_target_mean": y.mean(),
                      "q_target_max": y.max(), "q_target_min": y.min(),
                      "critic_loss": loss.detach(), "td_error_abs_mean": (q1 - y).abs().mean(),
                      "grad_norm_critic": grad_norm}
            return fwd_out[FEATURES], torch.stack([values[k] for k in CRITIC_STATS])

    def _actor_step(self, module_id, config, features: torch.Tensor) -> torch.Tensor:
        """-Q1(s, mu(s)) (+ the pre-tanh L2, not logged) on detached encoder
        features: only the actor head learns."""
        module = self.module[module_id].unwrapped()
        pre_tanh = module.actor.pre_tanh(features)
        q_actor = module.critic.q1(features, torch.tanh(pre_tanh))
        loss = -q_actor.mean()
        penalty = config.actor_preactivation_l2 * pre_tanh.pow(2).mean()
        grad_norm = self._step(module_id, ACTOR, loss + penalty, config.actor_grad_clip)
        with torch.no_grad():
            q = q_actor.detach()
            values = {"q_actor_mean": q.mean(), "q_actor_max": q.max(), "q_actor_min": q.min(),
                      "q_actor_std": q.std(), "actor_loss": loss.detach(),
                      "grad_norm_actor": grad_norm}
            return torch.stack([values[k] for k in ACTOR_STATS])

    def _step(self, module_id, name, loss, grad_clip) -> torch.Tensor:
        """One optimizer step on ``loss`` for ``net`` only; returns the pre-clip grad norm.

        A non-finite loss or gradient skips the step (the weights stay finite) and
        is counted; its norm is NaN, on the loss's device like every tensor here.
        """
        optim = self.get_optimizer(module_id, name)
        params = self._optim_params[(module_id, name)]
        optim.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            self.metrics.log_value((module_id, NONFINITE_LOSS), 1, reduce="lifetime_sum")
            if self._data_parallel:  # the other learners wait for this one's gradients
                data_parallel.average_gradients(params, poison=True)
                optim.zero_grad(set_to_none=True)
            return torch.full_like(loss.detach(), float("nan"))
        loss.backward(inputs=params)
        if self._data_parallel:
            data_parallel.average_gradients(params)
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip or float("inf"), foreach=True)
        if not torch.isfinite(norm):
            self.metrics.log_value((module_id, NONFINITE_GRADS), 1, reduce="lifetime_sum")
            optim.zero_grad(set_to_none=True)
            return norm
        optim.step()
        return norm

    @property
    def _optim_params(self) -> Dict[Any, List[torch.Tensor]]:
        if not hasattr(self, "_optim_params_cache"):
            self._optim_params_cache = {}
            for module_id in self.module.keys():
                for name, optim in self.get_optimizers_for_module(module_id):
                    params = [p for g in optim.param_groups for p in g["params"]]
                    self._optim_params_cache[(module_id, name)] = params
        return self._optim_params_cache

    def _log_stats(self, module_id, spec: Dict[str, str], rows: List[torch.Tensor]) -> None:
        """Reduce this call's per-update rows (one sync) and log them per iteration.

        NaN (a skipped step's norm and loss) is left out of every reduction, as
        RLlib's own reductions across calls do: a skipped step is counted in
        nonfinite_*, it does not erase the other updates' numbers."""
        if not rows:
            return
        table = torch.stack(rows)
        nan = torch.isnan(table)
        reduced = [
            {"mean": table[:, i].nanmean(),
             "max": table[:, i].masked_fill(nan[:, i], -torch.inf).max(),
             "min": table[:, i].masked_fill(nan[:, i], torch.inf).min()}[how]
            for i, how in enumerate(spec.values())
        ]
        # A column that is NaN in every update stays NaN (no number to report).
        reduced = torch.stack(reduced).masked_fill(nan.all(dim=0), torch.nan)
        for (name, how), value in zip(spec.items(), reduced.tolist()):
            self.metrics.log_value((module_id, name), value, reduce=how)

    # -- state -------------------------------------------------------------------

    def get_state(self, *args, **kwargs):
        state = super().get_state(*args, **kwargs)
        state["td3_critic_steps"] = dict(self._critic_steps)
        return state

    def set_state(self, state) -> None:
        super().set_state(state)
        if "td3_critic_steps" in state:
            self._critic_steps.update(state["td3_critic_steps"])


CRITIC_STATS_INDEX = {name: i for i, name in enumerate(CRITIC_STATS)}

