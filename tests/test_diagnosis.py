"""The diagnosis tree on hand-made run directories: each question fires on its
own evidence, in the incident's order, and prints its numbers; the TensorBoard
events of a run give the same walk as its metrics file."""

import dataclasses
import math
import json
import os
import pytest
import yaml

from rllib_av.cli import main
from rllib_av.health.diagnosis import diagnose
from rllib_av.health.divergence import DivergenceState, Verdict
from rllib_av.health.health_monitor import IterationHealth
from rllib_av.health.iteration_metrics import IterationMetrics
from rllib_av.monitoring.tensorboard_writer import TensorBoardWriter
from rllib_av.run_config import load_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
BOUND = 1455.0  # quickstart: max(|-14.55|, |11.5|) / (1 - 0.99)

HEALTHY_STATS = {"q_actor_mean": 0.7, "q_actor_max": 2.6, "q_actor_min": -6.4, "q_actor_std": 1.4,
                 "q_target_mean": 0.5, "q_target_max": 2.7, "q_target_min": -7.2, "q1_mean": 0.5,
                 "q2_mean": 0.5, "critic_loss": 0.13, "actor_loss": -0.7, "grad_norm_actor": 0.1,
                 "grad_norm_critic": 23.0, "td_error_abs_mean": 0.13, "q_bound": BOUND,
                 "q_bound_ratio": 0.005}
HEALTHY_REWARDS = {"efficiency": -0.16, "lane_keeping": -0.22, "comfort": -0.001, "safety": 0.0,
                   "progress": 0.99}
HEALTHY_PROBE = {"env_steps": 1536, "q_bound": BOUND, "reward_train_min": -3.0,
                 "reward_train_max": 0.97, "reward_range_min": -14.55, "reward_range_max": 11.5,
                 "reward_beyond_frac": 0.0, "reward_first_step_beyond_frac": 0.0,
                 "reward_growth": 28.7, "reward_pipeline": "ok", "terminal_transitions": 256,
                 "terminal_residual_masked": 0.86, "terminal_residual_unmasked": 1.54,
                 "terminal_masking": "ok", "overestimation_states": 132, "probe_q_mean": 0.7,
                 "probe_mc_return_mean": -0.1, "overestimation_bias": 0.8,
                 "overestimation_ratio": 0.8 / BOUND}


def record(step, stats=None, rewards=None, state=0):
    stats = {**HEALTHY_STATS, **(stats or {})}
    rewards = {**HEALTHY_REWARDS, **(rewards or {})}
    total_abs = sum(abs(v) for v in rewards.values())
    r = {"training_iteration": step // 64, "env_steps": step, "episode_return_mean": 10.0,
         "episode_len_mean": 60.0, "divergence_state": state}
    r.update({f"default_policy/{k}": v for k, v in stats.items()})
    r.update({f"reward_components/{k}": v for k, v in rewards.items()})
    r.update({f"reward_share/{k}": abs(v) / total_abs for k, v in rewards.items()})
    return r


def run_dir(tmp_path, records, probe=None):
    rc = load_run_config(QUICKSTART)
    with open(tmp_path / "config.yaml", "w") as f:
        yaml.safe_dump(dataclasses.asdict(rc), f)
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    if probe is not None:
        with open(tmp_path / "probes.jsonl", "w") as f:
            f.write(json.dumps(probe) + "\n")
    return str(tmp_path)


def healthy_run(n=5):
    return [record(256 + 64 * i) for i in range(n)]


def test_healthy_run_walks_every_question_and_lands_healthy(tmp_path):
    d = diagnose(run_dir(tmp_path, healthy_run(), HEALTHY_PROBE))
    assert d.branch == "healthy" and len(d.steps) == 4 and not any(s.fired for s in d.steps)
    text = d.format()
    assert "0.86 vs |Q - (r + gamma Q')| 1.54 -> ok" in text
    assert "Q - MC return on 132 evaluation states: 0.8" in text
    assert "remedy" not in text


@pytest.mark.parametrize("records,probe,branch,evidence", [
    # 2. a component beyond its declared range (lane_keeping is in [-1, 0] x weight 1)
    (healthy_run(2) + [record(512, rewards={"lane_keeping": -3.0})], HEALTHY_PROBE,
     "reward_scaling", "lane_keeping mean -3 outside its declared [-1, 0]"),
    # 2. one component dominating
    (healthy_run(2) + [record(512, rewards={"progress": 0.2, "safety": -9.0})], HEALTHY_PROBE,
     "reward_scaling", "largest share: safety 0.94"),
    # 2. the critic's rewards scaled past the declared range
    (healthy_run(), {**HEALTHY_PROBE, "reward_train_min": -2.6e4, "reward_train_max": 4.8e3,
                     "reward_beyond_frac": 0.56, "reward_first_step_beyond_frac": 0.67,
                     "reward_pipeline": "scale"}, "reward_scaling", "56.0% beyond, first steps 67.0% beyond -> scale"),
    # 3. targets beyond the bound at the onset
    (healthy_run(2) + [record(512, {"q_target_max": 3000.0, "q_actor_max": 2900.0,
                                    "q_bound_ratio": 2.06}, state=2)], HEALTHY_PROBE,
     "bootstrap", "2.06 x bound 1455"),
    # 3. rewards accumulated along episodes
    (healthy_run(), {**HEALTHY_PROBE, "reward_train_min": -35.9, "reward_beyond_frac": 0.03,
                     "reward_growth": 1084.0, "reward_pipeline": "accumulation"},
     "bootstrap", "(rewards are running sums)"),
    # 3. terminals bootstrapped
    (healthy_run(), {**HEALTHY_PROBE, "terminal_residual_masked": 3.48,
                     "terminal_residual_unmasked": 0.36, "terminal_masking": "unmasked"},
     "bootstrap", "-> unmasked"),
    # 4. Q past the bound while the targets are sane
    (healthy_run(2) + [record(512, {"q_actor_min": -1.9e6, "q_actor_mean": -5e4,
                                    "actor_loss": 5e4, "q_bound_ratio": 1316.0}, state=2)],
     HEALTHY_PROBE, "overestimation", "1.31e+03 x bound"),
    # 4. Q far above the Monte-Carlo return
    (healthy_run(), {**HEALTHY_PROBE, "overestimation_bias": 600.0,
                     "overestimation_ratio": 600.0 / BOUND}, "overestimation", "600 (0.412 x bound)"),
])
def test_each_branch_fires_on_its_evidence(tmp_path, records, probe, branch, evidence):
    d = diagnose(run_dir(tmp_path, records, probe))
    text = d.format()
    assert d.branch == branch, text
    assert evidence in text, text
    assert d.steps[-1].fired and not any(s.fired for s in d.steps[:-1])
    assert f"branch: {branch}" in text and "remedy:" in text


def test_onset_is_the_first_unhealthy_iteration(tmp_path):
    records = healthy_run(2) + [record(512, {"q_target_max": 3000.0, "q_bound_ratio": 2.06}, state=2),
                                record(576, {"q_actor_max": 9e4, "q_target_max": 1.0,
                                             "q_bound_ratio": 61.9}, state=2)]
    d = diagnose(run_dir(tmp_path, records, HEALTHY_PROBE))
    assert d.focus["env_steps"] == 512 and d.branch == "bootstrap"


def write_tensorboard(run_dir, records, tamper=None):
    """The run's TensorBoard events as the training writer writes them;
    ``tamper(stats)`` changes what gets published."""
    writer = TensorBoardWriter(os.path.join(run_dir, "tensorboard"))
    for r in records:
        stats = {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("default_policy/")}
        if tamper is not None:
            stats = tamper(stats)
        m = IterationMetrics(
            step=r["env_steps"], modules={"default_policy": stats},
            reward_mean={k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("reward_components/")},
            reward_share={k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("reward_share/")},
            episode_return_mean=r["episode_return_mean"], episode_length_mean=r["episode_len_mean"])
        verdict = Verdict(DivergenceState(r["divergence_state"]))
        writer.write(IterationHealth(m, verdicts={"default_policy": verdict}))
    writer.close()


def test_tensorboard_events_give_the_same_walk_as_the_metrics_file(tmp_path):
    records = healthy_run(2) + [record(512, {"q_target_max": 3000.0, "q_bound_ratio": 2.06}, state=2)]
    (tmp_path / "a").mkdir()
    from_metrics = diagnose(run_dir(tmp_path / "a", records, HEALTHY_PROBE))
    tb_dir = tmp_path / "b"
    tb_dir.mkdir()
    run_dir(tb_dir, [], HEALTHY_PROBE)
    os.remove(tb_dir / "metrics.jsonl")
    write_tensorboard(tb_dir, records)
    from_tb = diagnose(str(tb_dir))
    assert from_tb.branch == from_metrics.branch == "bootstrap"
    assert from_tb.focus["env_steps"] == 512
    assert from_tb.focus["default_policy/q_target_max"] == pytest.approx(3000.0)


def test_published_numbers_that_match_the_learner_pass_the_logging_question(tmp_path):
    records = healthy_run()
    write_tensorboard(run_dir(tmp_path, records, HEALTHY_PROBE), records)
    d = diagnose(str(tmp_path))
    assert d.branch == "healthy" and not d.steps[0].fired
    assert f"{5 * len(HEALTHY_STATS)} TensorBoard values of learner statistics against " \
           "metrics.jsonl: 0 differ" in d.format()


def test_published_numbers_that_differ_from_the_learner_are_a_logging_error(tmp_path):
    """What a human reads (TensorBoard) is not what the learner computed: a
    writer that publishes the sum of Q over the batch as its mean."""
    records = healthy_run()
    write_tensorboard(run_dir(tmp_path, records, HEALTHY_PROBE), records,
                      tamper=lambda s: dict(s, q_actor_mean=256 * s["q_actor_mean"]))
    d = diagnose(str(tmp_path))
    text = d.format()
    assert d.branch == "logging" and d.steps[0].fired, text
    assert "5 differ" in text
    assert "debug/actor_q_mean at env step 256: TensorBoard 179.2, learner 0.7" in text


def test_a_run_without_tensorboard_cannot_answer_the_logging_question(tmp_path):
    d = diagnose(run_dir(tmp_path, healthy_run(), HEALTHY_PROBE))
    assert not d.steps[0].fired and "not measurable" in d.steps[0].evidence[0]


def test_q_running_off_downward_is_named(tmp_path):
    records = healthy_run(2) + [record(512, {"q_target_min": -3.1e5, "q_actor_min": -2.9e5,
                                             "q_bound_ratio": 213.0}, state=2)]
    d = diagnose(run_dir(tmp_path, records, HEALTHY_PROBE))
    text = d.format()
    assert d.branch == "bootstrap", text
    assert "q_target in [-3.1e+05, 2.7], 213 x bound 1455 (running off downward)" in text
    assert text.splitlines()[0] == ("worst |Q|: 213x the bound 1455 at iteration 8 (env step 512): "
                                    "q_target_min -3.1e+05, running off downward")


def test_diagnose_cli_refuses_a_non_run_dir_in_one_line(tmp_path, capsys):
    assert main(["diagnose", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "is not a run directory" in lines[0], lines


def test_diagnose_cli_prints_the_walk(tmp_path, capsys):
    assert main(["diagnose", run_dir(tmp_path, healthy_run(), HEALTHY_PROBE)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("worst |Q|: 0.005x the bound 1455 at iteration")
    assert out[1].startswith("learner stats at iteration") and "branch: healthy" in out


@pytest.mark.slow
def test_probes_run_on_an_image_encoder_run(ray_local, tmp_path):
    """The probe's own rollouts must feed the CNN the stacks the EnvRunner does."""
    from rllib_av.health.probes import read_probes
    from rllib_av.training import train

    rc = load_run_config(QUICKSTART, [
        f"run.output_dir={tmp_path}", "run.total_env_steps=128", "run.min_time_s_per_iteration=0",
        "training.learning_starts=64", "training.batch_size=16", "training.buffer_size=2000",
        "training.image_encoder=nature_cnn", "training.frame_stack=2",
        "monitoring.exporter_port=0", "monitoring.tensorboard=false"])
    (probe,) = read_probes(train(rc, verbose=False))
    assert probe["overestimation_states"] > 0 and math.isfinite(probe["overestimation_bias"])
    assert probe["reward_pipeline"] == "ok"
