"""Where a driving policy's jerk and its speed deficit come from: the trained TD3
vs pure pursuit + PID.

    python benchmarks/jerk_breakdown.py --checkpoint RUN_DIR [--episodes 20]

Runs the checkpoint's policy and pure pursuit on its run's env (same seeds as
``rllib-av evaluate``) and splits the evaluation's jerk (|second difference of
speed| / dt^2, per step) by what each step was doing:

- ``reversal``: the applied throttle_brake changed direction from the
  previous step's change (pedal oscillation);
- ``brake``: the applied throttle_brake is negative;
- ``leader_close``: a vehicle ahead in the ego lane within 2 s of headway
  (or 10 m): braking or following behind traffic;
- ``standstill``: speed 0 before or after the step (braking at rest).

The embedded backend's speed changes only through throttle_brake and the drag,
so the jerk is the pedal's; the steering rate (|change of applied steer| per
step) is reported beside it, the comfort term's other half.

The speed (``speed``: per step taken, as ``rllib-av evaluate``'s average speed)
is split the same way into the standing ``start`` (the steps before the car
first reaches 90% of its cruise: the target speed, or the episode's 90th
percentile speed where that is lower), ``following`` (after the start, a
leader close as above; the leader's own speed beside it) and ``free`` road;
``deficit_share`` is each part's share of the summed shortfall under the target
speed: what holds the mean speed down, the start from rest or the traffic.
The free-road speed is split once more by the time gap to the car ahead
(2-4 s, 4-8 s, beyond, none in the lane): whether a policy slows for cars it
sees beyond the following distance.

Writes benchmarks/results/jerk_breakdown.json.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from rllib_av.envs.driving_env import DrivingEnv
from rllib_av.evaluation.baselines import PurePursuitPID
from rllib_av.evaluation.evaluation_plan import plan_evaluation
from rllib_av.evaluation.trained_policy import TrainedPolicy

HEADWAY_S, MIN_GAP_M = 2.0, 10.0
# Free-road steps split further by the time gap to the car ahead (gap / own
# speed): does a policy slow for cars it sees beyond the following distance?
FREE_HEADWAY_BINS_S = (HEADWAY_S, 4.0, 8.0, np.inf)
START_SPEED_FRACTION = 0.9
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "jerk_breakdown.json")


def _leader(env: DrivingEnv) -> tuple:
    """(gap in m, the leader's speed in m/s) to the vehicle ahead in the ego lane."""
    backend = env.backend
    leader, _ = backend.road.neighbour_vehicles(backend.ego)
    if leader is None:
        return float("inf"), float("nan")
    return backend.road.gap_along_circuit(backend.ego, leader), float(leader.speed)


def _close(gap: np.ndarray, speed: np.ndarray) -> np.ndarray:
    return gap < np.maximum(MIN_GAP_M, HEADWAY_S * speed)


def _episode(env: DrivingEnv, policy, seed: int) -> dict:
    obs, info = env.reset(seed=seed)
    policy.reset()
    speed, control, leader = [info["speed_mps"]], [np.zeros(2)], [_leader(env)]
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        speed.append(info["speed_mps"])
        control.append(np.asarray(obs["state"][3:5], np.float64))  # the applied control
        leader.append(_leader(env))
        done = terminated or truncated
    gap, leader_speed = np.asarray(leader).T
    return {"speed": np.asarray(speed), "control": np.asarray(control), "gap": gap,
            "leader_speed": leader_speed, "end": info["episode_end"]}


def breakdown(episodes, dt: float) -> dict:
    masks = {k: [] for k in ("reversal", "brake", "leader_close", "standstill")}
    jerk, steer_rate, pedal_rate = [], [], []
    for e in episodes:
        v, u, gap = e["speed"], e["control"], e["gap"]
        if len(v) < 3:
            continue
        j = np.abs(np.diff(v, n=2)) / dt**2  # step t = 2.. : speeds t-2, t-1, t
        d_pedal = np.diff(u[:, 1])  # change of applied throttle_brake into state t
        jerk.append(j)
        masks["reversal"].append(d_pedal[1:] * d_pedal[:-1] < 0)
        masks["brake"].append(u[2:, 1] < 0)
        masks["leader_close"].append(_close(gap[1:-1], v[1:-1]))
        masks["standstill"].append((v[2:] == 0) | (v[1:-1] == 0))
        steer_rate.append(np.abs(np.diff(u[:, 0])))
        pedal_rate.append(np.abs(d_pedal))
    j = np.concatenate(jerk)
    out = {"steps": int(len(j)), "jerk_mean_per_step_mps3": float(j.mean()),
           "steer_change_mean": float(np.concatenate(steer_rate).mean()),
           "pedal_change_mean": float(np.concatenate(pedal_rate).mean())}
    for name, m in masks.items():
        m = np.concatenate(m)
        out[name] = {"step_share": float(m.mean()),
                     "jerk_share": float(j[m].sum() / max(j.sum(), 1e-12)),
                     "jerk_mean_mps3": float(j[m].mean()) if m.any() else 0.0,
                     "jerk_mean_elsewhere_mps3": float(j[~m].mean()) if (~m).any() else 0.0}
    return out


def speed_breakdown(episodes, target_mps: float) -> dict:
    parts = {k: [] for k in ("start", "following", "free")}
    speed, leader_speed, gaps = [], [], []
    for e in episodes:
        v, gap = e["speed"][1:], e["gap"][1:]  # per step taken, as the evaluation's mean
        cruise = min(target_mps, float(np.percentile(v, 90))) if len(v) else target_mps
        reached = np.flatnonzero(v >= START_SPEED_FRACTION * cruise)
        start = np.arange(len(v)) < (reached[0] if len(reached) else len(v))
        following = ~start & _close(gap, v)
        parts["start"].append(start)
        parts["following"].append(following)
        parts["free"].append(~start & ~following)
        speed.append(v)
        leader_speed.append(e["leader_speed"][1:])
        gaps.append(gap)
    v, lv, gap = np.concatenate(speed), np.concatenate(leader_speed), np.concatenate(gaps)
    deficit = np.clip(target_mps - v, 0.0, None)
    masks = {name: np.concatenate(m) for name, m in parts.items()}
    out = {"target_kmh": target_mps * 3.6, "mean_kmh": float(v.mean() * 3.6)}
    for name, m in masks.items():
        out[name] = {"step_share": float(m.mean()),
                     "speed_kmh": float(v[m].mean() * 3.6) if m.any() else 0.0,
                     "deficit_share": float(deficit[m].sum() / max(deficit.sum(), 1e-12))}
    headway = gap / np.maximum(v, 0.1)  # inf: no car ahead in the lane
    bins = {f"{lo:g}-{hi:g}": (headway >= lo) & (headway < hi)
            for lo, hi in zip(FREE_HEADWAY_BINS_S[:-1], FREE_HEADWAY_BINS_S[1:])}
    bins["no car ahead"] = np.isinf(headway)
    out["free"]["by_headway_s"] = {
        name: {"step_share": float(m.mean()),
               "speed_kmh": float(v[m].mean() * 3.6) if m.any() else 0.0}
        for name, b in bins.items() for m in [masks["free"] & b]}
    following = masks["following"]
    out["following"]["leader_speed_kmh"] = (float(np.nanmean(lv[following]) * 3.6)
                                            if following.any() else 0.0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="RUN_DIR or RUN_DIR/checkpoints/iter_N")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--out", default=OUT)
    args = p.parse_args()
    plan = plan_evaluation(args.checkpoint, episodes=args.episodes, seed=args.seed)
    (name, settings), = plan.scenarios.items()
    env = DrivingEnv(settings)
    policies = [TrainedPolicy(plan.checkpoint, env, plan.rc), PurePursuitPID.for_env(settings)]
    result = {"benchmark": "jerk_breakdown", "checkpoint": os.path.relpath(plan.checkpoint),
              "scenario": name, "episodes": args.episodes, "seed": args.seed,
              "leader_close": f"gap < max({MIN_GAP_M} m, {HEADWAY_S} s x speed)", "policies": {}}
    for policy in policies:
        eps = [_episode(env, policy, args.seed + i) for i in range(args.episodes)]
        result["policies"][policy.name] = breakdown(eps, settings.step_dt_s)
        result["policies"][policy.name]["speed"] = speed_breakdown(eps, settings.target_speed_mps)
        result["policies"][policy.name]["ends"] = {
            e: sum(str(x["end"]) == e for x in eps) for e in sorted({str(x["end"]) for x in eps})}
    env.close()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
