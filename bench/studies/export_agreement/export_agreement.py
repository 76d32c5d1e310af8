"""How far each TFLite export of a shipped student moves its predictions: the figures that
tests/test_export_student.py's docstring and docs/USAGE.md's export paragraph quote, on that test's
own faces (the 7 real 68-point faces of tests/data/real_samples, cropped from their ground truth)
and its own calibration (32 faces rendered by synthetic_faces).

    python bench/studies/export_agreement/export_agreement.py [--model models/students/300w_kd.keras]

Writes bench/studies/export_agreement/export_agreement.md: per variant the mean and max |TFLite - Keras| of the
normalised coordinates (crop side = 1), the inter-ocular NME on the 7 faces, the per-face mean
point shift in % of the crop side, and the largest |output| of the Keras model (full int8 clips
outputs to the range seen in calibration).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3])]  # bench/ (_common, peers), the repository

import argparse
import tempfile

import numpy as np

from _common import REPO_ROOT, header_block, md_table, quiet_tf, results_path, write_results
from results_json import record

quiet_tf()
sys.path.insert(0, str(REPO_ROOT / "tests"))


def main(argv=None) -> int:
    import test_export_student as T

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(T.STUDENT), help="the .keras student to export (default: the test's)")
    p.add_argument("--out", default=None, help="results file (default bench/studies/export_agreement/export_agreement.md)")
    args = p.parse_args(argv)
    import evaluation
    import export
    from fixtures import all_68_point_faces
    from inference import KerasPredictor, TFLitePredictor, landmarks_norm_to_original

    keras_model = KerasPredictor(args.model)
    size = keras_model.input_size
    images, boxes, gts = T._crops(all_68_point_faces(), size)
    paths = export.export_tflite(args.model, tempfile.mkdtemp(),
                                 calibration_images=T._synthetic_calibration(size), report=False)
    reference = keras_model.predict_norm(images)

    def nme(norm):
        px = np.stack([landmarks_norm_to_original(a, b, size) for a, b in zip(norm, boxes)])
        return 100 * float(np.mean(evaluation.per_image_nme(px, gts, "300w")))

    rows = [["Keras", "-", "-", f"{nme(reference):.2f}", "-"]]
    for variant in ("float32", "float16", "dynamic_int8", "int8"):
        pred = TFLitePredictor(paths[variant]).predict_norm(images)
        diff = np.abs(pred - reference)
        shift = 100 * np.linalg.norm(pred - reference, axis=-1).mean(axis=1)
        rows.append([variant, f"{diff.mean():.1e}", f"{diff.max():.1e}", f"{nme(pred):.2f}",
                     ", ".join(f"{v:.1f}" for v in shift)])
    text = header_block("TFLite exports against the Keras model", sys.argv[1:] if argv is None else argv,
                        [f"model {args.model}; {len(images)} real faces ({size} px crops from their "
                         f"ground truth); largest |Keras output| {np.abs(reference).max():.2f}"]) + "\n" + \
        md_table(["variant", "mean abs diff", "max abs diff", "NME % (7 faces)",
                  "per-face mean shift, % of side"], rows) + "\n"
    print(text)
    write_results(text, results_path("export_agreement", False, args.out))
    record(results_path("export_agreement", False, args.out))   # its table, as data
    return 0


if __name__ == "__main__":
    sys.exit(main())
