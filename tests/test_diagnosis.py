"""The diagnosis tree on hand-made run directories: it explains the worst state
the run reached and when it began; each question fires on its own evidence, in
the incident's order, and prints its numbers, threshold and why; the
TensorBoard events of a run give the same walk as its metrics file."""

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
from rllib_av.health.iteration_metrics import IterationMetrics, reward_shares
from rllib_av.monitoring.tensorboard_writer import TensorBoardWriter
from rllib_av.run_config import load_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
REWARD_RANGE = (-14.55, 11.5)  # quickstart's declared per-step range
BOUND = 1455.0  # quickstart: max(|-14.55|, |11.5|) / (1 - 0.99)

HEALTHY_STATS = {"q_actor_mean": 0.7, "q_actor_max": 2.6, "q_actor_min": -6.4, "q_actor_std": 1.4,
                 "q_target_mean": 0.5, "q_target_max": 2.7, "q_target_min": -7.2, "q1_mean": 0.5,
                 "q2_mean": 0.5, "critic_loss": 0.13, "actor_loss": -0.7, "grad_norm_actor": 0.1,
                 "grad_norm_critic": 23.0, "td_error_abs_mean": 0.13, "q_bound": BOUND,
                 "q_bound_ratio": 0.005}
HEALTHY_REWARDS = {"efficiency": 0.16, "lane_keeping": -0.22, "comfort": -0.001, "safety": 0.0,
                   "progress": 0.99}
HEALTHY_PROBE = {"env_steps": 1536, "q_bound": BOUND, "reward_train_min": -3.0,
                 "reward_train_max": 0.97, "reward_range_min": -14.55, "reward_range_max": 11.5,
                 "reward_beyond_frac": 0.0, "reward_first_step_beyond_frac": 0.0,
                 "reward_growth": 28.7, "reward_pipeline": "ok", "terminal_transitions": 256,
                 "terminal_target_max_diff": 0.0, "terminal_bootstrap_abs_mean": 1.54,
                 "terminal_masking": "ok", "overestimation_states": 132, "probe_q_mean": 0.7,
                 "probe_mc_return_mean": -0.1, "overestimation_bias": 0.8,
                 "overestimation_return_scale": 3.0}


def record(step, stats=None, rewards=None, state=0, reasons=None):
    stats = {**HEALTHY_STATS, **(stats or {})}
    rewards = {**HEALTHY_REWARDS, **(rewards or {})}
    r = {"training_iteration": step // 64, "env_steps": step, "episode_return_mean": 10.0,
         "episode_len_mean": 60.0, "divergence_state": state}
    r.update({f"default_policy/{k}": v for k, v in stats.items()})
    r.update({f"reward_components/{k}": v for k, v in rewards.items()})
    # As the run's health monitor computes them (none where they are noise).
    shares = reward_shares({k: abs(v) for k, v in rewards.items()}, REWARD_RANGE)
    r.update({f"reward_share/{k}": v for k, v in shares.items()})
    if reasons:
        r["health_reasons"] = {"default_policy": reasons}
    return r


def run_dir(tmp_path, records, probe=None):
    """``probe``: one probe record or a list of them (oldest first)."""
    rc = load_run_config(QUICKSTART)
    with open(tmp_path / "config.yaml", "w") as f:
        yaml.safe_dump(dataclasses.asdict(rc), f)
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    if probe is not None:
        with open(tmp_path / "probes.jsonl", "w") as f:
            f.writelines(json.dumps(p) + "\n" for p in (probe if isinstance(probe, list)
                                                        else [probe]))
    return str(tmp_path)


def healthy_run(n=5):
    return [record(256 + 64 * i) for i in range(n)]


def test_healthy_run_walks_every_question_and_lands_healthy(tmp_path):
    d = diagnose(run_dir(tmp_path, healthy_run(), HEALTHY_PROBE))
    assert d.branch == "healthy" and len(d.steps) == 5 and not any(s.fired for s in d.steps)
    text = d.format()
    assert text.splitlines()[0].startswith("worst state: healthy throughout 5 iterations")
    assert ("max |target - r| 0 on 256 terminal rows (bootstrap term there 1.54) at env step "
            "1536, threshold target == r on every terminal row") in text
    assert "overestimation: not measured: 1 of 1 probes scored states, the trend needs 3" in text
    assert "remedy" not in text


def probes(*biases, scale=3.0):
    return [dict(HEALTHY_PROBE, overestimation_bias=b, overestimation_return_scale=scale)
            for b in biases]


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
                     "reward_pipeline": "scale"}, "reward_scaling",
     "critic's rewards in [-2.6e+04, 4800], 56.0% beyond, scaled beyond it"),
    # 2. rewards accumulated along episodes: a reward beyond its range is a reward
    # problem (it used to be answered "bootstrap")
    (healthy_run(), {**HEALTHY_PROBE, "reward_train_min": -35.9, "reward_beyond_frac": 0.82,
                     "reward_growth": 1084.0, "reward_pipeline": "accumulation"},
     "reward_scaling", "82.0% beyond, growing along episodes: running sums"),
    # 3. the learner's targets on terminal rows are not r: bootstrapped through the end
    (healthy_run(), {**HEALTHY_PROBE, "terminal_target_max_diff": 17.2,
                     "terminal_masking": "unmasked"}, "bootstrap", "-> unmasked"),
    # 4. Q past the bound while the rewards and the update are sane
    (healthy_run(2) + [record(512, {"q_actor_min": -1.9e6, "q_actor_mean": -5e4,
                                    "actor_loss": 5e4, "q_bound_ratio": 1316.0}, state=2)],
     HEALTHY_PROBE, "overestimation", "1.31e+03 x bound"),
    # 4. targets beyond the bound with a correct update: the critic diverged
    # (targets beyond the bound alone used to be answered "bootstrap")
    (healthy_run(2) + [record(512, {"q_target_max": 3000.0, "q_actor_max": 2900.0,
                                    "q_bound_ratio": 2.06}, state=2)], HEALTHY_PROBE,
     "overestimation", "q_target in [-7.2, 3000], 2.06 x bound 1455 (running off upward)"),
    # 4. an overestimation bias growing beyond twice the returns' scale
    (healthy_run(), probes(0.8, 3.0, 7.0), "overestimation",
     "Q - return 0.8 -> 3 -> 7 (last 2.33x the return scale 3"),
])
def test_each_branch_fires_on_its_evidence(tmp_path, records, probe, branch, evidence):
    d = diagnose(run_dir(tmp_path, records, probe))
    text = d.format()
    assert d.branch == branch, text
    assert evidence in text, text
    assert d.steps[-1].fired and not any(s.fired for s in d.steps[:-1])
    assert f"branch: {branch}" in text and "remedy:" in text


def test_nan_rewards_the_env_returned_are_a_reward_problem_not_unexplained(tmp_path):
    """Training drops every chunk holding a NaN/inf, so the replay's rewards are
    all in range while the verdict says diverged (NaN/inf in every iteration);
    the probes' rollouts see the env's own rewards."""
    reason = "diverged: nonfinite: NaN/inf new in 4 consecutive iterations (2 in replay)"
    records = healthy_run(2) + [record(512, state=2, reasons=[reason])]
    d = diagnose(run_dir(tmp_path, records, {**HEALTHY_PROBE, "probe_steps": 600,
                                             "probe_nonfinite_rewards": 13}))
    text = d.format()
    assert d.branch == "reward_scaling", text
    assert "the env returned 13 NaN/inf rewards in the probe's 600 rollout steps" in text
    assert "remedy: return a finite reward on every step" in text


def test_a_large_but_shrinking_bias_is_not_overestimation(tmp_path):
    """Early in a negative-reward task Q ~ 0 sits a return's magnitude above
    the returns, and shrinks as the critic learns: initialization, not
    overestimation (one snapshot against 0.25 x bound used to call it that)."""
    d = diagnose(run_dir(tmp_path, healthy_run(), probes(739.0, 728.6, 691.7, scale=717.0)))
    assert d.branch == "healthy", d.format()


def test_the_worst_state_is_explained_and_when_it_began_is_said(tmp_path):
    """The first warning came from the gradient norm while Q was still ~0.1x
    the bound; Q then went to thousands of times the bound. The tree must read
    the worst iteration (reading the first one called this run healthy)."""
    grad_warning = ("warning: grad_norm: critic grad norm 2e+04 (threshold > 1e+04; the driving "
                    "preset (the driving incident's GO/NO-GO table))")
    bound_reason = "diverged: q_bound: |Q| at 3.1e+03x the bound 1455 (...)"
    records = healthy_run(2) + [
        record(512, {"q_actor_max": 150.0, "q_bound_ratio": 0.1, "grad_norm_critic": 2e4},
               state=1, reasons=[grad_warning]),
        record(576, {"q_actor_max": 900.0, "q_bound_ratio": 0.62}, state=1,
               reasons=[grad_warning]),
        record(640, {"q_actor_max": 4.5e6, "q_actor_mean": 2e6, "actor_loss": -2e6,
                     "q_target_max": 4.4e6, "q_bound_ratio": 3093.0}, state=2,
               reasons=[bound_reason]),
        record(704, {"q_actor_max": 2e6, "q_bound_ratio": 1375.0}, state=2,
               reasons=[bound_reason])]
    d = diagnose(run_dir(tmp_path, records, HEALTHY_PROBE))
    lines = d.format().splitlines()
    assert d.focus["env_steps"] == 640 and d.branch == "overestimation", d.format()
    assert lines[0] == ("worst state: diverged at iteration 10 (env step 640): |Q| 3.09e+03x the "
                        "bound 1455: q_actor_max 4.5e+06, running off upward")
    assert lines[1] == f"  verdict: {bound_reason}"
    assert lines[2] == ("began: warning from iteration 8 (env step 512); diverged from "
                        "iteration 10 (env step 640)")
    assert lines[3] == f"  first verdict: {grad_warning}"


def test_a_run_that_was_not_healthy_is_never_diagnosed_healthy(tmp_path):
    """NaN from the env made the verdict diverge; no branch of the tree is
    about it: the answer is 'unexplained', with the verdict's reasons."""
    reason = ("diverged: nonfinite: NaN/inf new in 3 consecutive iterations (4 in replay) "
              "(threshold ...)")
    records = healthy_run(3) + [record(448, state=2, reasons=[reason])]
    d = diagnose(run_dir(tmp_path, records, HEALTHY_PROBE))
    text = d.format()
    assert d.branch == "unexplained", text
    assert f"  verdict: {reason}" in text and "branch: unexplained" in text


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
    assert from_tb.branch == from_metrics.branch == "overestimation"
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
    assert d.branch == "overestimation", text
    assert "q_target in [-3.1e+05, 2.7], 213 x bound 1455 (running off downward)" in text
    assert text.splitlines()[0] == ("worst state: diverged at iteration 8 (env step 512): |Q| "
                                    "213x the bound 1455: q_target_min -3.1e+05, running off "
                                    "downward")


def test_a_car_standing_still_has_no_dominating_component(tmp_path):
    """An unstable critic (critic_lr 3.0 on the quickstart) whose car stands
    still: every component is 0 but for ~1e-16 of rounding in lane_keeping.
    Shares of that are no data, not lane_keeping dominating at 100%: the
    branch is the critic's, not reward scaling."""
    still = {"efficiency": 0.0, "lane_keeping": -4.1e-16, "comfort": 0.0, "safety": 0.0,
             "progress": 0.0}
    records = healthy_run(2) + [
        record(512, {"q_actor_min": -5.1e6, "q_bound_ratio": 3488.0}, rewards=still, state=2),
        record(576, {"q_actor_min": -1200.0, "q_bound_ratio": 0.9}, rewards=still, state=1)]
    d = diagnose(run_dir(tmp_path, records, HEALTHY_PROBE))
    text = d.format()
    assert d.branch == "overestimation", text
    assert not d.steps[1].fired and "largest share" not in text
    assert "no component shares at iteration 9 (env step 576)" in text


def test_diagnose_cli_refuses_a_non_run_dir_in_one_line(tmp_path, capsys):
    assert main(["diagnose", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "is not a run directory" in lines[0], lines


def test_diagnose_cli_prints_the_walk(tmp_path, capsys):
    assert main(["diagnose", run_dir(tmp_path, healthy_run(), HEALTHY_PROBE)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("worst state: healthy throughout 5 iterations; worst |Q| at iteration 4 "
                      "(env step 256): |Q| 0.005x the bound 1455: q_target_min -7.2")
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
