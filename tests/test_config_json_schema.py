"""The run config's JSON Schema: `rllib-av config schema` prints it, the
committed configs/run_config.schema.json is that output, every YAML in
configs/ names it on its first line (so yaml-language-server completes and
checks it in an editor), and every shipped config validates against it with a
real JSON-Schema validator; the schema refuses what loading refuses."""

import glob
import json
import os
import re

import pytest

from rllib_av.cli import main
from rllib_av.config_schema import ConfigError, from_dict
from rllib_av.run_config import RunConfig, load_run_config, load_yaml, run_config_schema

jsonschema = pytest.importorskip("jsonschema")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_FILE = os.path.join(ROOT, "configs", "run_config.schema.json")
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
MODELINE = "# yaml-language-server: $schema=run_config.schema.json"


def test_the_committed_schema_is_what_the_command_prints(capsys):
    assert main(["config", "schema"]) == 0
    printed = capsys.readouterr().out
    with open(SCHEMA_FILE) as f:
        assert f.read() == printed, (
            "configs/run_config.schema.json is stale: rllib-av config schema > "
            "configs/run_config.schema.json")


def test_the_schema_is_a_valid_json_schema_of_every_section():
    schema = run_config_schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert set(schema["properties"]) == {"run", "env", "training", "resources", "monitoring",
                                         "health"}


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_shipped_config_names_the_schema_and_validates_against_it(path):
    with open(path) as f:
        text = f.read()
    first = text.splitlines()[0]
    assert first == MODELINE
    assert os.path.isfile(os.path.join(os.path.dirname(path), first.split("$schema=", 1)[1]))
    with open(SCHEMA_FILE) as f:
        schema = json.load(f)
    jsonschema.validate(load_yaml(text), schema)


# What loading refuses and the schema can say too: (override, the same config as data).
REFUSED = [
    ("training.gamma=1.5", {"training": {"gamma": 1.5}}),
    ("training.image_encoder=resnet", {"training": {"image_encoder": "resnet"}}),
    ("run.seed=three", {"run": {"seed": "three"}}),
    ("run.total_env_steps=2.5", {"run": {"total_env_steps": 2.5}}),
    ("env.no_such_key=1", {"env": {"no_such_key": 1}}),
    ("training.actor_hiddens=[0]", {"training": {"actor_hiddens": [0]}}),
    ("env.carla.port=manual", {"env": {"carla": {"port": "manual"}}}),
    ("monitoring.exporter=1", {"monitoring": {"exporter": 1}}),
]


@pytest.mark.parametrize("override,data", REFUSED, ids=[r[0] for r in REFUSED])
def test_the_schema_refuses_what_loading_refuses(override, data):
    with pytest.raises(ConfigError):
        load_run_config(None, [override])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, run_config_schema())


def test_scientific_notation_for_an_integer_key_is_valid_in_both():
    data = load_yaml("run:\n  total_env_steps: 1e6\ntraining:\n  critic_lr: 1e-4\n")
    jsonschema.validate(data, run_config_schema())
    assert load_run_config(None, ["run.total_env_steps=1e6"]).run.total_env_steps == 1_000_000


def test_readmes_config_example_names_the_schema_and_is_valid():
    readme = open(os.path.join(ROOT, "README.md")).read()
    examples = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if MODELINE in b]
    assert examples
    for text in examples:
        jsonschema.validate(load_yaml(text), run_config_schema())
        from_dict(RunConfig, load_yaml(text))
