"""DrivingEnv steps per second on the embedded highway-env backend, image
observations included, uniform random actions, one process, per traffic level.

Also times the camera alone against highway-env's own pygame renderer drawing
the same road at the same 84x84 size, so the ratio says what the numpy camera
buys. Target (issue 3): >= 300 env steps/s at light traffic.

    python benchmarks/env_speed.py [--steps 3000]
"""

import argparse
import json
import os
import platform
import time

import numpy as np

from rllib_av.envs import DrivingEnv

LEVELS = ("none", "light", "medium", "heavy")


def env_steps_per_s(traffic: str, steps: int) -> dict:
    env = DrivingEnv({"traffic": traffic, "max_episode_steps": 500})
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    episodes = 1
    t0 = time.perf_counter()
    for _ in range(steps):
        # Mostly forward so traffic interacts; random enough to leave the road.
        _, _, terminated, truncated, _ = env.step(rng.uniform([-1, -0.3], [1, 1]))
        if terminated or truncated:
            env.reset()
            episodes += 1
    dt = time.perf_counter() - t0
    env.close()
    return {"env_steps_per_s": steps / dt, "steps": steps, "episodes": episodes}


def camera_vs_pygame(frames: int = 300) -> dict:
    """ms per 84x84 frame: our numpy camera vs highway-env's pygame viewer."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    from highway_env.envs.common.graphics import EnvViewer
    from highway_env.road.graphics import RoadGraphics

    env = DrivingEnv({"traffic": "light"})
    env.reset(seed=0)
    backend = env.backend
    t0 = time.perf_counter()
    for _ in range(frames):
        backend.camera.render(backend.ego.position, backend.ego.heading, backend._boxes())
    ours = (time.perf_counter() - t0) / frames * 1e3

    class _Host:  # the attributes EnvViewer reads from an AbstractEnv
        config = {"screen_width": 84, "screen_height": 84, "centering_position": [0.5, 0.75],
                  "scaling": 2.0, "offscreen_rendering": True, "real_time_rendering": False,
                  "show_trajectories": False, "render_agent": True}
        road = backend.road
        vehicle = backend.ego

    viewer = EnvViewer(_Host())
    viewer.observer_vehicle = backend.ego
    t0 = time.perf_counter()
    for _ in range(frames):
        viewer.sim_surface.move_display_window_to(viewer.window_position())
        RoadGraphics.display(backend.road, viewer.sim_surface)
        RoadGraphics.display_traffic(backend.road, viewer.sim_surface, offscreen=True)
        viewer.get_image().mean(axis=2).astype(np.uint8)  # to grayscale, as ours
    theirs = (time.perf_counter() - t0) / frames * 1e3
    viewer.close()
    return {"numpy_camera_ms": ours, "highway_env_pygame_ms": theirs,
            "speedup": theirs / ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    results = {
        "benchmark": "env_speed",
        # The box is shared: the load average says how contended the timing was.
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m_at_start": os.getloadavg()[0]},
        "observation": "image uint8 84x84 + state float32 (K=10)",
        "target_light_env_steps_per_s": 300,
        "traffic": {level: env_steps_per_s(level, args.steps) for level in LEVELS},
        "camera_84x84": camera_vs_pygame(),
    }
    results["light_meets_target"] = results["traffic"]["light"]["env_steps_per_s"] >= 300
    out = os.path.join(os.path.dirname(__file__), "results", "env_speed.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
