"""Precise BatchNorm on a trained model: validation and test NME in inference mode with the model's
own moving statistics, with statistics re-estimated on plain training faces (what the trainers did
until 2026-11-27), and on crops of the training pool (what they do now: the faces and their
augmented copies, training.recalibration_images), beside the mean training shape.

    python bench/studies/batchnorm/precise_bn.py --model models/teachers/300w_tough.keras --prepared-dir DIR \
        --augment offline --aug-copies 3 --test-dir data/prepared/300w-synthetic-64 \
        [--save OUT.keras] [--name NAME]

The training options (--prepared-dir, --augment, --aug-copies, --aug-jitter, --seed,
--val-fraction, --bn-recalibration, or --config RUN/config.json) are the trainer's and must be the
run's own, so that the pool (augmented as the run's batches were) and the validation faces are the
ones the model was trained and selected on.
--save writes the model recalibrated on the pool (float16 weights when the source has them).
Appends one row per model to bench/studies/batchnorm/precise_bn.md (--out elsewhere).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3])]  # bench/ (_common, peers), the repository


import numpy as np

from _common import (command_line, existing_rows, fmt, header_block, md_table, quiet_tf, results_path,
                     write_results)
from results_json import record

quiet_tf()

COLUMNS = ["model", "crops", "val NME %: own / plain faces / pool",
           "test NME %: own / plain faces / pool", "test MSE: own / plain faces / pool",
           "test NME %, mean shape", "command"]
UNRECORDED = "(not recorded: models/README.md)"   # rows written before the command column


def _plain_faces(data, count: int) -> np.ndarray:
    """The trainers' draw until 2026-11-27: `count` plain training faces, no augmented copies."""
    rng = np.random.default_rng([int(data.cfg.seed), 7919])
    rows = np.sort(rng.choice(data.train_rows, min(int(count), len(data.train_rows)), replace=False))
    return np.asarray(data.train.images[rows])


def recalibration_draws(cfg, data) -> dict:
    """The crops of each re-estimation, cfg.bn_recalibration of them: plain training faces, and the
    crops of the training pool the trainer re-estimates on (training.recalibration_images, augmented
    with the run's own online augmentation: its --augment and --aug-jitter)."""
    import training
    count = int(cfg.bn_recalibration)
    return {"plain faces": _plain_faces(data, count),
            "pool": training.recalibration_images(data, count, training.online_augment(cfg, data.info))}


def run_parser(description: str):
    """The trainer's options that select a run's pool, validation faces and re-estimation (or
    --config RUN/config.json), without the training-only ones."""
    import training
    return training.build_parser(description, run_options=False,
                                 skip=("student_mode", "cache_teacher_predictions", "loss_preset",
                                       "width_multiplier", "teacher_dropout",
                                       "teacher_stochastic_depth", "epochs", "learning_rate",
                                       "lr_decay", "lr_schedule", "weights", "asm_variance", "asm_align",
                                       "strategy", "mixed_precision", "jit_compile",
                                       "deterministic", "run_dir", "resume"))


def main(argv=None) -> int:
    import training
    parser = run_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the trained .keras model to recalibrate")
    parser.add_argument("--test-dir", default=None,
                        help="prepared folder whose test split is scored (default: --prepared-dir)")
    parser.add_argument("--save", metavar="OUT.keras", default=None,
                        help="write the model recalibrated on the training pool here")
    parser.add_argument("--name", default=None, help="the model's name in the table (default: the path)")
    parser.add_argument("--out", default=None, help="results file (default bench/studies/batchnorm/precise_bn.md)")
    args = parser.parse_args(argv)
    import cnn_model
    import data_util

    cfg = training.config_from_args(args, trainer="teacher")
    data = training.load_training_data(cfg)
    test = data_util.load_prepared(args.test_dir or data.prepared_dir, "test")
    count = int(cfg.bn_recalibration)
    draws = recalibration_draws(cfg, data)
    val_x, val_y = data.val_images(), data.val_landmarks()
    test_x, test_y = np.asarray(test.images), np.asarray(test.landmarks, np.float32)

    def scores(model):
        val = training.mean_nme(training.predict_images(model, val_x), val_y, data.info)
        pred = training.predict_images(model, test_x)
        return 100 * val, 100 * training.mean_nme(pred, test_y, data.info), \
            float(np.mean((pred - test_y.reshape(len(pred), -1)) ** 2))

    results = {"own": scores(cnn_model.load_model(args.model, expect_points=test.num_points,
                                                  expect_input_size=test.input_size))}
    model = None
    for name, images in draws.items():
        model = cnn_model.load_model(args.model)
        cnn_model.recalibrate_batchnorm(model, images.astype(np.float32) / np.float32(255.0),
                                        training.replica_batch_size(cfg))
        results[name] = scores(model)
    mean_shape = np.repeat(data.train_face_landmarks().mean(0).reshape(1, -1), len(test_y), 0)
    shape_nme = 100 * training.mean_nme(mean_shape, test_y, data.info)
    if args.save:   # `model` is the last one recalibrated: the pool's
        halves = np.dtype(np.float16) in _stored_dtypes(args.model)
        cnn_model.save_model(model, args.save, float16_weights=halves)
        print(f"wrote {args.save} (recalibrated on {len(draws['pool'])} pool crops"
              f"{', float16 weights' if halves else ''})")

    def triple(i, digits=2):
        return " / ".join(fmt(results[k][i], digits) if digits else f"{results[k][i]:.5f}"
                          for k in ("own", "plain faces", "pool"))

    command = command_line(__file__, argv)
    row = [args.name or args.model, str(count), triple(0), triple(1), triple(2, 0), fmt(shape_nme),
           f"`{command}`"]
    path = results_path("precise_bn", False, args.out)
    rows = existing_rows(path, COLUMNS, UNRECORDED)
    rows = [r for r in rows if r[0] != row[0]] + [row]
    text = header_block("Precise BatchNorm: plain faces or the training pool",
                        ["--config", "RUN/config.json", "--model", "MODEL", "..."],
                        ["inference mode; validation faces of each model's own run, test faces of "
                         "the --test-dir; inter-ocular NME; 'own': the model's moving statistics as "
                         "saved; 'plain faces': re-estimated on plain training faces, as the "
                         "trainers did before; 'pool': on crops of the training pool (plain and "
                         "augmented), as they do now, in batches of the training size on a shuffled "
                         "draw (the rows whose command column says 'not recorded', written before "
                         "commit 5769720: in batches of 128 in the pool's order). One row per model; "
                         "its last column is the command that wrote it"]) + "\n" + \
        md_table(COLUMNS, rows) + "\n"
    print(md_table(COLUMNS, [row]))
    write_results(text, path)
    record(path)                                     # its table, as data (results.json)
    return 0


def _stored_dtypes(path):
    """The dtypes of the weight arrays stored in a .keras file."""
    import zipfile
    import h5py
    import io
    with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as f:
        found = []
        f.visititems(lambda _, obj: found.append(obj) if isinstance(obj, h5py.Dataset) else None)
        return [d.dtype for d in found]


if __name__ == "__main__":
    sys.exit(main())
