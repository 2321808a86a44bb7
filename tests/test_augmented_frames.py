"""The run report shows an image run's frame stacks as the encoder gets them: shifted."""

import dataclasses
import json
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from rllib_av.algorithms.td3.augmentation import PAD
from rllib_av.evaluation import augmented_frames
from rllib_av.evaluation.report import write_report
from rllib_av.run_config import load_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMERA = os.path.join(ROOT, "configs", "highway_traffic_camera.yaml")


def run_dir(tmp_path, config, *overrides):
    rc = load_run_config(config, list(overrides))
    with open(tmp_path / "config.yaml", "w") as f:
        yaml.safe_dump(dataclasses.asdict(rc), f)
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"training_iteration": 1, "env_steps": 64}) + "\n")
    return str(tmp_path)


def test_image_run_report_shows_shifted_stacks(tmp_path, monkeypatch):
    seen = {}
    real_plot = augmented_frames._plot

    def keep(observed, shifted, path):
        seen.update(observed=observed, shifted=shifted)
        real_plot(observed, shifted, path)

    monkeypatch.setattr(augmented_frames, "_plot", keep)
    page = open(write_report(run_dir(tmp_path, CAMERA))).read()
    assert 'src="augmented_frames.png"' in page and "What the encoder sees" in page
    png = np.asarray(Image.open(tmp_path / "report" / "augmented_frames.png").convert("L"))
    assert png.std() > 5
    observed, shifted = seen["observed"], seen["shifted"]
    assert observed.shape == shifted.shape == (3, 3, 84, 84)  # 3 stacks of frame_stack 3
    assert not np.array_equal(observed, shifted)
    # Each shown stack is the observed one moved by at most PAD pixels, all frames together.
    for obs, out in zip(observed, shifted):
        padded = np.pad(obs, ((0, 0), (PAD, PAD), (PAD, PAD)), mode="edge")
        assert any(np.array_equal(padded[:, PAD + dy:PAD + dy + 84, PAD + dx:PAD + dx + 84], out)
                   for dy in range(-PAD, PAD + 1) for dx in range(-PAD, PAD + 1))


def test_unaugmented_image_run_shows_the_frames_as_observed(tmp_path):
    html = augmented_frames.augmented_frames_html(
        run_dir(tmp_path, CAMERA, "training.image_augmentation=false"), str(tmp_path))
    assert "not augmented" in html and (tmp_path / "augmented_frames.png").is_file()


@pytest.mark.parametrize("overrides,expected", [
    (["training.image_encoder=none"], ""),
    (["env.backend=carla"], "embedded backend"),
])
def test_no_rollout_without_an_image_encoder_or_off_the_embedded_backend(
        tmp_path, overrides, expected):
    html = augmented_frames.augmented_frames_html(run_dir(tmp_path, CAMERA, *overrides),
                                                  str(tmp_path))
    assert (html == "") if expected == "" else (expected in html)
    assert not (tmp_path / "augmented_frames.png").exists()
