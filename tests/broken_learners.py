"""Broken TD3 learners a user could write, owned by the tests (never by the
product), selected with ``training.learner_class: "broken_learners:<Class>"``
(the tests directory is on sys.path under pytest)."""

from rllib_av.algorithms.td3.td3_learner import TD3TorchLearner
from rllib_av.replay.sampling import DISCOUNTS

# The bootstrap weighs 10x what the discount says: an effective discount of
# 10 * gamma > 1 makes the critic's fixed point infinite, so Q leaves the bound
# within a few thousand updates.
BOOTSTRAP_SCALE = 10.0


class InflatedBootstrap(TD3TorchLearner):
    """A user's learner that scales the bootstrap term of the Bellman target
    (e.g. a horizon correction applied twice): a genuinely unstable TD update."""

    def _critic_loss(self, module_id, config, batch, fwd_out):
        batch = {**batch, DISCOUNTS: batch[DISCOUNTS] * BOOTSTRAP_SCALE}
        return super()._critic_loss(module_id, config, batch, fwd_out)
