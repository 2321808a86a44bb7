"""A simulator that hangs, for real: the CARLA world keeps ticking but the
camera stream goes silent (its frames never come), and nothing raises. The
backend's own watchdog, a frame within ``env.carla.tick_timeout_s``, turns the
hang into a truncated episode; the next reset relaunches the server.

(A tick that never returns is the ``carla`` client's own time-out, which the
fake reproduces; see test_carla_backend. The embedded highway backend runs in
the EnvRunner's process and has no watchdog to exercise.)"""

import threading

import numpy as np

import fake_carla
from rllib_av.envs.driving_env import DrivingEnv
from test_carla_backend import follow, settings, sim  # noqa: F401  (sim is a fixture)


def silence_the_camera(world):
    """The camera stays attached and listening; its images go nowhere."""
    [camera] = [a for a in world.actors.values()
                if isinstance(a, fake_carla.Sensor) and a.type_id == "sensor.camera.rgb"]
    camera.listen(lambda image: None)


def step_unless_hung(env, action, patience_s=30.0):
    """env.step, or a test failure once it has not returned for ``patience_s``
    (150x the watchdog's 0.2 s): without a watchdog the step never returns."""
    out = []
    worker = threading.Thread(target=lambda: out.append(env.step(action)), daemon=True)
    worker.start()
    worker.join(patience_s)
    assert out, "env.step never returned: nothing watches the simulator"
    return out[0]


def test_a_silent_camera_is_caught_by_the_frame_watchdog_and_the_server_relaunched(sim):  # noqa: F811
    env = DrivingEnv(settings())
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(follow(obs))
    hung, frame = sim.world, sim.world.frame
    silence_the_camera(hung)
    last_obs = obs
    obs, reward, terminated, truncated, info = step_unless_hung(env, follow(obs))
    # The world ticked on: what hung was the frame, and the watchdog caught it.
    assert hung.frame > frame
    assert (terminated, truncated, reward) == (False, True, 0.0)
    assert info["sim_failure"] and info["episode_end"] == "sim_failure"
    np.testing.assert_array_equal(obs["state"], last_obs["state"])
    assert sim.restarts == 0  # the relaunch belongs to the next reset
    obs, info = env.reset(seed=1)
    assert sim.restarts == 1 and sim.world is not hung
    assert info["sim_server_restarts"] == 1
    obs, _, terminated, truncated, info = env.step(follow(obs))
    assert not (terminated or truncated or info["sim_failure"])
    assert info["sim_server_restarts"] == 0
    env.close()
