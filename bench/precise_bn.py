"""What precise BatchNorm does to a trained model: test NME and MSE in inference mode with the
model's own moving statistics, then after cnn_model.recalibrate_batchnorm on training faces, beside
the mean training shape (a model-free reference).

    python bench/precise_bn.py --model OLD_MODEL.keras --prepared-dir data/prepared/300w-synthetic-64

Writes bench/results/precise_bn.md. The models trained since precise BN was added are already
recalibrated at every epoch end (TrainConfig.bn_recalibration), so this is for models made before.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from _common import fmt, header_block, md_table, quiet_tf, results_path, write_results

quiet_tf()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--prepared-dir", required=True)
    p.add_argument("--faces", type=int, default=256, help="training faces for the re-estimate")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import cnn_model
    import data_util
    import evaluation

    train = data_util.load_prepared(args.prepared_dir, "train")
    test = data_util.load_prepared(args.prepared_dir, "test")
    model = cnn_model.load_model(args.model, expect_points=test.num_points, expect_input_size=test.input_size)
    x_test = np.asarray(test.images, np.float32) / 255.0
    y_test = np.asarray(test.landmarks, np.float64)
    pick = np.random.default_rng(0).choice(len(train.images), min(args.faces, len(train.images)), replace=False)
    x_train = np.asarray(train.images[np.sort(pick)], np.float32) / 255.0

    def row(name, norm):
        norm = np.asarray(norm, np.float64).reshape(y_test.shape)
        px = evaluation.predictions_from_norm(norm, test.crop_boxes, test.input_size)
        nme = 100 * evaluation.per_image_nme(px, np.asarray(test.landmarks_px), test.dataset).mean()
        return [name, fmt(nme), f"{np.mean((norm - y_test) ** 2):.4f}"]

    rows = [row("mean training shape", np.repeat(np.asarray(train.landmarks, np.float64).mean(0)[None], len(y_test), 0)),
            row("model, its own moving statistics", model.predict(x_test, verbose=0, batch_size=64))]
    cnn_model.recalibrate_batchnorm(model, x_train)
    rows.append(row(f"model, statistics re-estimated on {len(x_train)} training faces",
                    model.predict(x_test, verbose=0, batch_size=64)))
    text = header_block("Precise BatchNorm on a trained model", sys.argv[1:] if argv is None else argv,
                        [f"{len(y_test)} test faces of {args.prepared_dir}; inter-ocular NME, MSE of "
                         "normalised coordinates; inference mode"]) + "\n" + \
        md_table(["predictions", "test NME %", "test MSE"], rows) + "\n"
    print(text)
    write_results(text, results_path("precise_bn", False, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
