"""The import picture of rllib_av/: every import (function-local ones too)
points down the layers or stays in its layer, and no module imports itself
back through others. health/ computes and decides; it imports nothing that
runs training, publishes, or holds the algorithm."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rllib_av")

# Top to bottom: a module may import its own layer and the ones below it.
LAYERS = (
    ("rllib_av.cli",),
    ("rllib_av.evaluation",),
    ("rllib_av.training", "rllib_av.preflight_run", "rllib_av.critic_probes",
     "rllib_av.guard_actions", "rllib_av.startup_checks", "rllib_av.run_config"),
    ("rllib_av.monitoring",),
    ("rllib_av.algorithms",),
    ("rllib_av.health",),
    ("rllib_av.replay",),
    ("rllib_av.envs",),
    ("rllib_av.config_schema", "rllib_av.checkpoints", "rllib_av.progress",
     "rllib_av.dependency_noise", "rllib_av"),
)


def layer_of(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best[0]


def module_names():
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), os.path.dirname(PACKAGE))[:-3]
                name = rel.replace(os.sep, ".")
                yield name.removesuffix(".__init__"), os.path.join(root, f)


def imports_of(path: str, known) -> set:
    """The rllib_av modules ``path`` imports, anywhere in it."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                # "from pkg import module" depends on the module, "from module import name"
                # on the module it names.
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {n for n in out if n in known}


GRAPH = None


def graph():
    global GRAPH
    if GRAPH is None:
        paths = dict(module_names())
        GRAPH = {m: imports_of(p, paths) - {m} for m, p in paths.items()}
    return GRAPH


def test_every_import_points_down_or_sideways():
    upward = [f"{m} -> {d}" for m, deps in graph().items() for d in deps
              if layer_of(d) < layer_of(m)]
    assert not upward, upward


def test_health_imports_nothing_above_it():
    health = layer_of("rllib_av.health")
    above = [f"{m} -> {d}" for m, deps in graph().items() if m.startswith("rllib_av.health")
             for d in deps if layer_of(d) < health]
    assert not above, above


def test_no_import_cycle():
    g, state, cycles = graph(), {}, []

    def visit(m, path):
        state[m] = "open"
        for d in sorted(g[m]):
            if state.get(d) == "open":
                cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


@pytest.mark.parametrize("module,expected", [
    ("rllib_av.health.divergence", 5), ("rllib_av.training", 2), ("rllib_av.cli", 0),
    ("rllib_av.monitoring.exporter", 3), ("rllib_av", 8)])
def test_layers_are_assigned_by_longest_prefix(module, expected):
    assert layer_of(module) == expected
