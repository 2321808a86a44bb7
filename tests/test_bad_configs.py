"""Bad run configs (issue 8.5): invalid configs generated from the RunConfig
pydantic schema (its field infos) (wrong types, out-of-range values, unknown keys, missing
files, contradictory settings) each give ConfigError with ONE line naming the
key, the value and what is allowed (the "expected ..." part is checked against
the schema: the type, the bound, the choices, the keys of the section); through
the real CLI: exit 2, that line on stderr, no traceback."""

import json
import math
import subprocess
import sys
import typing

import annotated_types
import pytest
import yaml

from rllib_av.config_schema import ConfigError
from rllib_av.envs.carla_settings import ExistingPath
from rllib_av.run_config import RunConfig, load_run_config

# Words a message uses to introduce what is allowed.
ALLOWED_WORDS = ("expected", "allowed")
TYPE_WORDS = {int: "integer", float: "number", bool: "true or false", str: "string"}


def _fields(cls):
    """The section's pydantic field infos, by key."""
    return cls.__pydantic_fields__


def _is_section(tp):
    return hasattr(tp, "__pydantic_fields__")


def _leaves(cls, prefix=""):
    for name, info in _fields(cls).items():
        tp, key = info.annotation, prefix + name
        if _is_section(tp):
            yield from _leaves(tp, key + ".")
        else:
            yield key, tp, info.metadata


def _sections(cls, prefix=""):
    yield prefix.rstrip(".")
    for name, info in _fields(cls).items():
        if _is_section(info.annotation):
            yield from _sections(info.annotation, prefix + name + ".")


def _strip(tp):
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _base(tp):
    """The non-None member of Optional[X]; X itself otherwise (Annotated kept)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp


def _type_words(tp):
    """Words the "expected ..." part must hold for a value of the wrong type."""
    tp = _strip(_base(tp))
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return ("list",)
    if origin is dict:
        return ("mapping",)
    if origin is typing.Union:
        return tuple(w for arg in typing.get_args(tp) for w in _type_words(arg))
    if origin is typing.Literal:
        return tuple(repr(a) for a in typing.get_args(tp))
    return (TYPE_WORDS[tp],)


def _wrong_types(tp):
    tp = _strip(_base(tp))
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        values = ["not-a-list", {"a": 1}]
    elif origin is dict:
        values = [[1, 2], "not-a-mapping"]
    elif origin is typing.Union:  # int or "auto"
        values = ["manual", 1.5]
    elif origin is typing.Literal:  # choices
        values = [123, ["a"]]
    else:
        values = {int: ["three", 2.5, True], float: ["fast", True, [1.0]],
                  bool: ["yes", 1], str: [123, ["a"]]}[tp]
    return [(v, _type_words(tp)) for v in values]


def _bounds(tp, metadata):
    """{op: bound} of a field: its own constraints, or its list items'."""
    base = _strip(_base(tp))
    item = typing.get_args(base)[0] if typing.get_origin(base) is list else None
    if typing.get_origin(item) is typing.Annotated:
        metadata = [m for extra in typing.get_args(item)[1:]
                    for m in getattr(extra, "metadata", [extra])]
    return {op: getattr(m, op) for m in metadata
            for op, cls in _OPS.items() if isinstance(m, cls)}


_OPS = {"ge": annotated_types.Ge, "gt": annotated_types.Gt, "le": annotated_types.Le,
        "lt": annotated_types.Lt}
_SYMBOLS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _out_of_range(tp, metadata):
    values = []
    base = _strip(_base(tp))
    is_list = typing.get_origin(base) is list
    is_int = base is int or (is_list and _strip(typing.get_args(base)[0]) is int)
    for op, b in _bounds(tp, metadata).items():
        step = 1 if is_int else max(abs(b) * 0.5, 0.01)
        bad = {"ge": b - step, "gt": b, "le": b + step, "lt": b}[op]
        bad = [bad] if is_list else bad
        values.append((bad, (f"{_SYMBOLS[op]} {b}",)))
    if base is float:
        values.append((math.inf, ("finite",)))
    if typing.get_origin(base) is typing.Literal:
        choices = typing.get_args(base)
        values += [(v, tuple(map(repr, choices))) for v in ("bogus", choices[0].upper() + "x")]
    return values


def _section_keys(section):
    cls = RunConfig
    for name in filter(None, section.split(".")):
        cls = _fields(cls)[name].annotation
    return tuple(_fields(cls))


def generated_cases():
    """(override key, value, words the "expected ..." part must hold), each
    invalid on its own."""
    cases = []
    for key, tp, metadata in _leaves(RunConfig):
        cases += [(key, v, allowed) for v, allowed in _wrong_types(tp)]
        cases += [(key, v, allowed) for v, allowed in _out_of_range(tp, metadata)]
        if _base(tp) == ExistingPath:
            cases.append((key, "/no/such/dir/carla", ("existing path",)))
    cases += [(f"{section}.no_such_key" if section else "no_such_section", 1,
               _section_keys(section)) for section in _sections(RunConfig)]
    return cases


# Settings valid alone, contradictory together: (overrides, the keys named: the
# first is the one reported, the others the side it contradicts).
CONTRADICTIONS = [
    (["env.target_speed_mps=20", "env.max_speed_mps=10"],
     ("env.target_speed_mps", "env.max_speed_mps")),
    (["health.q_bound_warn_ratio=2", "health.q_bound_diverge_ratio=1.5"],
     ("health.q_bound_warn_ratio", "health.q_bound_diverge_ratio")),
    # Scientific notation, as users write it: 1e7 > the driving preset's grad_norm_diverge 1e6.
    (["health.preset=driving", "health.grad_norm_warn=1e7"],
     ("health.grad_norm_warn", "health.grad_norm_diverge")),
    (["training.batch_size=512", "training.buffer_size=256"],
     ("training.batch_size", "training.buffer_size")),
    (["training.reward_range=[5, -5]"], ("training.reward_range",)),
    (["training.reward_range=[1, 2, 3]"], ("training.reward_range",)),
    (["env.highway.npc_speed_fraction=[0.9, 0.6]"], ("env.highway.npc_speed_fraction",)),
    (["env.highway.npc_speed_fraction=[0.5]"], ("env.highway.npc_speed_fraction",)),
    (["env.action_smoothing=[0.5, 0.5, 0.5]"], ("env.action_smoothing",)),
    (["env.carla.port_range_start=3000", "env.carla.port_range_end=2000"],
     ("env.carla.port_range_end", "port_range_start")),
    (["health.preflight_episode_len_min=30", "health.preflight_episode_len_max=20"],
     ("health.preflight_episode_len_min", "health.preflight_episode_len_max")),
    (["training.async_sampling=true", "resources.num_env_runners=0"],
     ("training.async_sampling", "resources.num_env_runners")),
]


# What the generator does not derive from the fields: (override, the whole line).
EXACT = [
    # pydantic's lax mode would take these: a numeric string, a bool, a whole string.
    ('run.seed="3"', "run.seed: '3' is not allowed; expected an integer"),
    ("training.gamma=true", "training.gamma: True is not allowed; expected a finite number"),
    ('monitoring.exporter="true"',
     "monitoring.exporter: 'true' is not allowed; expected true or false"),
    ("env=5", "env: 5 is not allowed; expected a mapping"),
    ("training.actor_hiddens=[64, x]",
     "training.actor_hiddens[1]: 'x' is not allowed; expected an integer"),
    ("resources.env_runner_resources={carla_slot: x}",
     "resources.env_runner_resources.carla_slot: 'x' is not allowed; expected a finite number"),
    ("env.carla.gpu_indices=[0, -1]",
     "env.carla.gpu_indices: [0, -1] is not allowed; expected a value >= 0"),
    # A union is judged whole, and the line names each form with its bounds.
    ("env.action_smoothing=[0.5, 1.5]",
     "env.action_smoothing: [0.5, 1.5] is not allowed; expected a finite number >= 0 and < 1 "
     "or a list of a finite number >= 0 and < 1"),
]


@pytest.mark.parametrize("override,line", EXACT, ids=[e[0] for e in EXACT])
def test_messages_pydantic_does_not_write(override, line):
    with pytest.raises(ConfigError) as e:
        load_run_config(None, [override])
    assert str(e.value) == line


def test_a_whole_float_is_an_integer_only_where_an_integer_is_expected():
    rc = load_run_config(None, ["training.actor_hiddens=[64.0, 3e1]", "run.seed=7.0",
                                "training.gamma=1e-1"])
    assert rc.training.actor_hiddens == [64, 30] and rc.run.seed == 7
    assert all(type(v) is int for v in rc.training.actor_hiddens + [rc.run.seed])
    assert type(rc.training.gamma) is float


def _override(key, value):
    return f"{key}={json.dumps(value)}" if value != math.inf else f"{key}=.inf"


def _value_named(message, value):
    forms = {str(value), repr(value), json.dumps(value)}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        forms.add(repr(float(value)))
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        forms.add(repr([float(v) for v in value]))
    return any(f and f in message for f in forms)


def _assert_one_clear_line(message, key):
    assert "\n" not in message and message.strip() == message
    assert key in message, message
    assert any(w in message for w in ALLOWED_WORDS + ("unknown key", "missing")), message


def _allowed_part(message):
    """What the message says is allowed: the text after "expected" or after
    "allowed keys here:"."""
    for intro in ("allowed keys here:", "expected "):
        if intro in message:
            return message.split(intro, 1)[1]
    raise AssertionError(f"no 'expected ...' part: {message}")


CASES = generated_cases()


def test_at_least_200_generated_invalid_configs():
    assert len(CASES) + len(CONTRADICTIONS) >= 200


@pytest.mark.parametrize("key,value,allowed", CASES, ids=[f"{k}={v!r}" for k, v, _ in CASES])
def test_generated_invalid_config_names_key_value_and_allowed(key, value, allowed):
    with pytest.raises(ConfigError) as e:
        load_run_config(None, [_override(key, value)])
    message = str(e.value)
    _assert_one_clear_line(message, key)
    if "no_such" not in key:
        assert _value_named(message, value), message
    part = _allowed_part(message)
    missing = [w for w in allowed if w not in part]
    assert not missing, f"{message!r} does not name {missing} as allowed"


@pytest.mark.parametrize("overrides,keys", CONTRADICTIONS, ids=[c[1][0] for c in CONTRADICTIONS])
def test_contradictory_settings_name_both_sides(overrides, keys):
    with pytest.raises(ConfigError) as e:
        load_run_config(None, overrides)
    message = str(e.value)
    _assert_one_clear_line(message, keys[0])
    # The cross-field rule was reached: what is allowed is said in terms of the other side.
    other_sides = _allowed_part(message)
    assert all(k in other_sides for k in keys[1:]), message


def test_bad_files_are_one_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("run:\n  name: [unclosed\n")
    listing = tmp_path / "list.yaml"
    listing.write_text(yaml.safe_dump([1, 2]))
    for path, words in [(str(tmp_path / "missing.yaml"), "does not exist"),
                        (str(broken), "not valid YAML"), (str(listing), "mapping")]:
        with pytest.raises(ConfigError) as e:
            load_run_config(path)
        assert path in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


# ~20 of the cases through the real command line (a process each: slow).
CLI_SAMPLE = [(k, v) for k, v, _ in CASES[:: max(1, len(CASES) // 16)]] + [
    (None, ["--config", "/no/such/config.yaml"]),
    (None, ["--resume", "/no/such/run_dir"]),
    (None, ["--set", "training.gamma"]),
    (None, ["--set", "training.gamma=[unclosed"]),
    (None, ["--set", "training.max_policy_lag_updates=0"]),
    (None, ["--set", "training.async_sampling=true", "--set", "resources.num_env_runners=0"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("key,value", CLI_SAMPLE, ids=[f"{k}={v!r}" for k, v in CLI_SAMPLE])
def test_cli_bad_input_is_one_line_exit_2(key, value, tmp_path):
    args = value if key is None else ["--set", _override(key, value)]
    proc = subprocess.run([sys.executable, "-m", "rllib_av.cli", "train", *args,
                           "--set", f"run.output_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rllib-av: error: "), proc.stderr[-2000:]
    assert not list(tmp_path.iterdir())  # nothing started, no run directory
