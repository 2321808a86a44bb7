"""Two data-parallel TD3 learners in two processes (gloo, no Ray): what
``num_learners: 2`` relies on, checked step by step where the Ray test
(test_learner_replay.py) only sees whole iterations. Learner 0's weights reach
both at build; every step averages both learners' gradients; a step that one
learner must skip (its loss NaN) is skipped by both, so their weights never
part."""

from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rllib_av.algorithms.td3.td3_learner import TD3TorchLearner
from test_td3_semantics import batch, make_learner, params
from test_td3_update_pins import update


class NanLossOnLearner1(TD3TorchLearner):
    """Learner 1's second critic loss is NaN (a fault the other learner cannot see)."""

    def _critic_loss(self, module_id, config, batch, fwd_out):
        loss, y = super()._critic_loss(module_id, config, batch, fwd_out)
        self.calls = getattr(self, "calls", 0) + 1
        if dist.get_rank() == 1 and self.calls == 2:
            loss = loss * float("nan")
        return loss, y


def _learner_process(rank: int, init_file: str, out: str) -> None:
    """One learner's three updates; leaves this process's torch as it found it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # A learner whose peer died fails within a minute instead of waiting forever.
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        with torch.random.fork_rng():
            _train_and_save(rank, out)
    finally:
        dist.destroy_process_group()
        torch.set_num_threads(threads)


def _train_and_save(rank: int, out: str) -> None:
    torch.manual_seed(rank)  # different initial weights on each learner
    learner, module = make_learner(policy_delay=1000, learner_class=NanLossOnLearner1)
    record = {"build": params(module.critic)}
    stats = {}
    for name, seed in (("step", 1), ("poisoned", 2), ("after", 3)):
        stats[name] = update(learner, batch(seed=10 * seed + rank))  # each its own batch
        record[name] = params(module.critic)
    np.savez(f"{out}/{rank}.npz",
             **{f"{name}/{i}": p.numpy() for name, ps in record.items()
                for i, p in enumerate(ps)},
             **{f"stats/{name}/{k}": np.float64(v) for name, s in stats.items()
                for k, v in s.items() if k in ("nonfinite_loss", "nonfinite_grads")})


def test_data_parallel_learners_start_equal_average_every_step_and_skip_a_poisoned_one(tmp_path):
    # Learner 0 runs in this process (so that mutation testing sees which
    # learner code this test reaches), learner 1 in a spawned one.
    args = (str(tmp_path / "rendezvous"), str(tmp_path))
    peer = mp.get_context("spawn").Process(target=_learner_process, args=(1, *args))
    peer.start()
    try:
        _learner_process(0, *args)
        peer.join(timeout=120)
        assert peer.exitcode == 0, f"learner 1 exited with {peer.exitcode}"
    finally:
        if peer.is_alive():
            peer.kill()
            peer.join()
    learners = [np.load(tmp_path / f"{rank}.npz") for rank in (0, 1)]
    names = sorted(k for k in learners[0].files if not k.startswith("stats/"))
    for name in names:  # both learners hold the same weights after every step
        np.testing.assert_array_equal(learners[0][name], learners[1][name], err_msg=name)

    def weights(step):
        return [learners[0][f"{step}/{i}"] for i in range(sum(n.startswith(f"{step}/") for n in names))]

    def moved(a, b):
        return any(not np.array_equal(x, y) for x, y in zip(weights(a), weights(b)))

    assert moved("build", "step") and moved("poisoned", "after")
    assert not moved("step", "poisoned"), "a step one learner skipped moved the weights"
    # Learner 1 counts its NaN loss; learner 0 the NaN average it received.
    assert learners[1]["stats/poisoned/nonfinite_loss"] == 1
    assert learners[0]["stats/poisoned/nonfinite_grads"] == 1
