"""How close a Tolerant teacher can get to the ground truth: its targets are the Active Shape
Model's soft landmarks (METHOD.md section 3), so a perfect Tolerant teacher scores, against the
ground truth, the NME of the soft landmarks themselves. This projects the test faces of a prepared
folder onto a fitted ASM (the asm.npz the teacher's soft landmarks came from) and reports that
floor, and, for each model given, its NME against the ground truth and against the soft landmarks
of the same faces (its own kind of target).

    python bench/studies/tolerant_floor/tolerant_floor.py --prepared-dir data/prepared/300w-synthetic-64 \
        --asm data/prepared/300w-large20k-64/asm.npz --models models/teachers/300w_tolerant.keras

NME: mean point distance / the ground truth's inter-ocular distance, per face, in %; on the
normalised crop coordinates (a similarity of the photo's, so the same NME). Writes
bench/studies/tolerant_floor/tolerant_floor.md (or --out).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3])]  # bench/ (_common, peers), the repository

import argparse

import numpy as np

from _common import fmt, md_table, publish, quiet_tf, results_path
from results_json import record

quiet_tf()


def floor_rows(gt_norm, soft_norm, predictions: dict, dataset: str) -> list:
    """Rows [what, mean NME % against the ground truth, against the soft landmarks]: the soft
    landmarks themselves, then each model's predictions (name -> (M, N, 2) normalised)."""
    import metrics
    from configuration import dataset_info

    io = dataset_info(dataset).interocular
    d_gt = metrics.normaliser_distance(gt_norm, io)   # both NMEs over the ground truth's eye distance

    def nme(pred, target):
        return 100 * float(np.mean(np.linalg.norm(pred - target, axis=-1).mean(axis=1) / d_gt))

    rows = [["soft landmarks (a perfect Tolerant teacher)", fmt(nme(soft_norm, gt_norm)), fmt(0.0)]]
    for name, pred in predictions.items():
        rows.append([name, fmt(nme(pred, gt_norm)), fmt(nme(pred, soft_norm))])
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prepared-dir", required=True, help="prepared folder whose test faces are scored")
    p.add_argument("--asm", required=True, help="the asm.npz the Tolerant teacher's soft landmarks came from")
    p.add_argument("--models", nargs="*", default=[], help=".keras or .tflite models to score on the same faces")
    p.add_argument("--out", default=None, help="results file (default bench/studies/tolerant_floor/tolerant_floor.md)")
    args = p.parse_args(argv)

    import data_util
    from asm_soft_landmarks import ActiveShapeModel
    from inference import load_predictor

    split = data_util.load_prepared(args.prepared_dir, "test", soft=False)
    gt = np.asarray(split.landmarks, np.float64)
    asm = ActiveShapeModel.load(args.asm)
    soft = asm.project(gt)
    preds = {}
    names = [Path(m).name for m in args.models]
    images = np.asarray(split.images, np.float32) / 255.0
    for path, name in zip(args.models, names):
        label = name if names.count(name) == 1 else str(path)   # same file names: the whole paths
        preds[label] = load_predictor(path).predict_norm(images).astype(np.float64)
    rows = floor_rows(gt, soft, preds, split.dataset)
    body = md_table(["what", f"mean NME % against the ground truth ({len(gt)} test faces)",
                     "mean NME % against the soft landmarks"], rows) + "\n"
    publish("How close a Tolerant teacher can get to the ground truth", body, "tolerant_floor", args.out,
            notes=[f"test faces: {args.prepared_dir} ({split.dataset}, {split.input_size} px)",
                   f"shape model: {args.asm}: k = {asm.k} components "
                   f"({100 * float(np.sum(asm.explained_ratio)):.2f}% of the variance), "
                   f"coefficients clipped to +-3 sd as in training"])
    record(results_path("tolerant_floor", False, args.out))     # its tables, as data
    return 0


if __name__ == "__main__":
    sys.exit(main())
