"""Sim-to-real with a long run: the L2 student trained on many synthetic 300W faces (rendered
straight into training crops, plus their mirror images), scored on synthetic test faces; score the
real faces afterwards with bench/studies/sim_to_real/sim_to_real.py.

Plain Keras (`model.fit` on arrays, no TensorFlow-only code), so it also runs where TensorFlow is not
installed, e.g. a GPU machine with JAX:

    KERAS_BACKEND=jax python bench/studies/synthetic_long_run/synthetic_long_run.py --faces 30000 --minutes 4 --out runs/long
    python bench/studies/sim_to_real/sim_to_real.py --models runs/long/student_l2_long.keras

The faces are those of synthetic_faces.generate (face k drawn with default_rng(seed + k); training
difficulty "normal", the test faces in 300W's common/challenging mix), cropped by the training
protocol (image_utility.square_box_from_landmarks, margin 0.25). Writes the model and run.json.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3])]  # bench/ (_common, peers), the repository

import argparse
import json
import os
import time

import numpy as np


from runtime import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

import image_utility as iu  # noqa: E402
import synthetic_faces as sf  # noqa: E402
from _common import nme_io_68  # noqa: E402  (inter-ocular NME, a fraction)
from configuration import dataset_info  # noqa: E402

INFO = dataset_info("300w")


def render_crop(job):
    """Worker: face `index` -> (crop uint8 (S, S, 3), landmarks_norm (68, 2)), and its mirror."""
    index, seed, size, difficulty, mirror = job
    image, landmarks, _ = sf.render_face(np.random.default_rng(seed + index), difficulty=difficulty)
    box = iu.square_box_from_landmarks(landmarks[68], 0.25)
    crop = iu.crop_and_resize(image, box, size)
    pts = iu.landmarks_to_crop(landmarks[68], box, size)
    out = [(crop, iu.normalize_landmarks(pts, size))]
    if mirror:
        flipped, fpts = iu.flip_horizontal(crop, pts, INFO.flip_permutation)
        out.append((flipped, iu.normalize_landmarks(fpts, size)))
    return out


def render_set(first: int, count: int, seed: int, size: int, difficulties, mirror: bool, workers: int):
    import multiprocessing as mp

    jobs = [(first + i, seed, size, difficulties[i], mirror) for i in range(count)]
    with mp.get_context("fork").Pool(workers) as pool:
        pairs = [p for r in pool.imap(render_crop, jobs, chunksize=16) for p in r]
    return (np.stack([c for c, _ in pairs]), np.stack([v for _, v in pairs]).astype(np.float32))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", type=int, default=30000, help="training faces (each also mirrored)")
    p.add_argument("--test-faces", type=int, default=1000)
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--minutes", type=float, default=4.0, help="training time budget")
    p.add_argument("--max-epochs", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--out", default="runs/synthetic_long_run")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    x_tr, y_tr = render_set(0, args.faces, args.seed, args.input_size, ["normal"] * args.faces, True, args.workers)
    test_jobs = [j[2] for j in sf._split_300w(0, args.test_faces)]   # difficulty per 300W test face
    x_te, y_te = render_set(args.faces, args.test_faces, args.seed, args.input_size, test_jobs, False, args.workers)
    render_s = time.time() - t0
    print(f"rendered {len(x_tr)} training crops (with mirrors) and {len(x_te)} test crops in {render_s:.0f} s",
          flush=True)

    import keras

    import cnn_model

    keras.utils.set_random_seed(args.seed)
    model = cnn_model.build_student(68, args.input_size)
    schedule = keras.optimizers.schedules.InverseTimeDecay(1e-3, decay_steps=1, decay_rate=1e-4)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
    x_tr = x_tr.astype(np.float32) / 255.0
    x_te = x_te.astype(np.float32) / 255.0
    y_tr, y_te = y_tr.reshape(len(y_tr), -1), y_te.reshape(len(y_te), -1)
    history, epoch_s = [], []

    class Budget(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.time()

        def on_epoch_end(self, epoch, logs=None):
            epoch_s.append(time.time() - self.t)
            pred = self.model.predict(x_te, batch_size=512, verbose=0)
            nme = 100 * float(np.mean(nme_io_68(pred.reshape(-1, 68, 2), y_te.reshape(-1, 68, 2))))
            history.append({"epoch": epoch + 1, "loss": float(logs["loss"]), "test_nme": nme,
                            "seconds": epoch_s[-1]})
            print(f"epoch {epoch + 1}: {epoch_s[-1]:.1f} s, loss {logs['loss']:.5f}, synthetic test NME {nme:.2f}%",
                  flush=True)
            if time.time() - t_train > 60 * args.minutes:
                self.model.stop_training = True

    t_train = time.time()
    model.fit(x_tr, y_tr, batch_size=args.batch_size, epochs=args.max_epochs, shuffle=True,
              callbacks=[Budget()], verbose=0)
    train_s = time.time() - t_train
    # a fresh, uncompiled copy: no optimizer state in the file (10 MB instead of 30 MB, small
    # enough to fetch from a remote machine)
    clean = cnn_model.build_student(68, args.input_size)
    clean.set_weights(model.get_weights())
    cnn_model.save_model(clean, out / "student_l2_long.keras")
    steady = epoch_s[1:] or epoch_s
    run = {"backend": keras.backend.backend(), "faces": args.faces, "training_crops": int(len(x_tr)),
           "test_faces": int(len(x_te)), "input_size": args.input_size, "batch_size": args.batch_size,
           "epochs": len(history), "render_s": render_s, "train_s": train_s,
           "images_per_s_steady": float(len(x_tr) / np.median(steady)), "history": history,
           "final_test_nme": history[-1]["test_nme"] if history else None}
    (out / "run.json").write_text(json.dumps(run, indent=1))
    print(json.dumps({k: v for k, v in run.items() if k != "history"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
