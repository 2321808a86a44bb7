import os

import pytest

# Keep Ray quiet and small on a 2-core CI box.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# Ray's worker processes inherit this: remote EnvRunners import the tests' envs
# (``env.id: "failing_simulator:..."``) as the driver does.
TESTS = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance shared by the tests that need one."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()


def pytest_terminal_summary(terminalreporter):
    """The set-up zoo's confusion table, when the zoo ran (tests/test_setup_zoo.py)."""
    import sys

    zoo = sys.modules.get("setup_zoo")
    if zoo is not None and zoo.RESULTS:
        terminalreporter.section("set-up zoo: gate, verdict and diagnosis")
        terminalreporter.write_line(zoo.confusion_table(zoo.RESULTS))
