"""Evaluate, run and export a landmark model (thin CLI over evaluation.py, inference.py, export.py).

    python test.py --dataset 300w [--model models/students/300w_kd.keras] [--prepared-dir D]
        predicts the prepared test split, writes results/<name>/predictions.json, then scores it:
        scores.json, results.md (beside the paper's numbers), ced.png, samples.png
    python test.py --predictions FILE [--prepared-dir D]     score an existing predictions file
    python test.py --model M --image PHOTO | --folder DIR | --video FILE [--box x y w h]
        landmarks on your own pictures (Haar face detector unless --box is given)
    python test.py --model M.keras --export tflite|savedmodel [--prepared-dir D]

A .tflite model works exactly like a .keras one for evaluation and inference. Expected failures
print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from errors import quiet_tensorflow

quiet_tensorflow()

from configuration import MODELS_DIR, REPO_ROOT, PrepareConfig, dataset_info  # noqa: E402
from errors import ConfigError, ModelError, run_cli  # noqa: E402

RESULTS_DIR = REPO_ROOT / "results"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=None, help="300w, cofw or wflw (default: the predictions "
                                                   "file's dataset, else 300w)")
    p.add_argument("--model", default=None, help="a .keras or .tflite model (default: "
                                                 "models/students/<dataset>_kd.keras)")
    p.add_argument("--prepared-dir", default=None, help="prepared data (default: data/prepared/"
                                                        "<dataset>-synthetic-<model input size>)")
    p.add_argument("--predictions", default=None, help="score this predictions file (no model needed)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--image", default=None, help="run on one photo")
    g.add_argument("--folder", default=None, help="run on every image of a folder")
    g.add_argument("--video", default=None, help="run on every frame of a video")
    p.add_argument("--box", nargs=4, type=float, metavar=("X", "Y", "W", "H"), default=None,
                   help="face box in original-image pixels (skips the face detector)")
    p.add_argument("--export", choices=("tflite", "savedmodel"), default=None,
                   help="export the .keras model (export.py) instead of evaluating")
    p.add_argument("--int8-io", choices=("int8", "float"), default="int8",
                   help="I/O type of the full-int8 TFLite model (with --export tflite)")
    p.add_argument("--name", default=None, help="results sub-folder name (default: a timestamp)")
    p.add_argument("--out-dir", default=None, help="output folder (default: results/<name>, or "
                                                   "models/export for --export)")
    p.add_argument("--mode", default=None, help="kd, l2, tough-only, tolerant-only or teacher: which "
                                                "published row is the same setting (default: guessed "
                                                "from the model's file name)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--samples", type=int, default=12, help="faces drawn in samples.png")
    p.add_argument("--max-frames", type=int, default=None, help="stop a video after this many frames")
    return p


def _out_dir(args, model_path=None) -> Path:
    if args.out_dir:
        return Path(args.out_dir)
    stem = Path(model_path).stem if model_path else "predictions"
    name = args.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}"
    return RESULTS_DIR / name


def _default_model(dataset: str) -> Path:
    path = MODELS_DIR / "students" / f"{dataset}_kd.keras"
    if not path.is_file():
        raise ModelError(f"{path}: no trained student; train one (python student_trainer.py "
                         f"--dataset {dataset}) or pass --model PATH")
    return path


def _guess_mode(model_name: str):
    s = Path(str(model_name)).stem.lower()
    for key, mode in (("tough-only", "tough-only"), ("tough_only", "tough-only"),
                      ("tolerant-only", "tolerant-only"), ("tolerant_only", "tolerant-only"),
                      ("teacher", "teacher"), ("tough", "teacher"), ("_l2", "l2"), ("_kd", "kd")):
        if key in s:
            return mode
    return None


def predict_split(predictor, split, batch_size: int = 32):
    """Normalised predictions for every face of a prepared split -> original-image pixels."""
    import numpy as np

    from evaluation import predictions_from_norm

    out = []
    for i in range(0, len(split), batch_size):
        imgs = np.asarray(split.images[i:i + batch_size], dtype=np.float32) / 255.0
        out.append(predictor.predict_norm(imgs, batch_size=batch_size))
    norm = np.concatenate(out) if out else np.zeros((0, split.num_points, 2), np.float32)
    return predictions_from_norm(norm, np.asarray(split.crop_boxes), split.input_size)


def score_and_report(pred_path: Path, prepared_dir, out_dir: Path, dataset=None, mode=None,
                     samples: int = 12) -> dict:
    """Score a predictions file and write scores.json, results.md, ced.png, samples.png."""
    import numpy as np

    import evaluation as ev
    from safe_io import atomic_write_json, atomic_write_text

    preds = ev.read_predictions(pred_path)
    dataset = (dataset or preds.dataset).lower()
    if preds.dataset != dataset:
        raise ConfigError(f"{pred_path}: predictions are for {preds.dataset!r}, --dataset says "
                          f"{dataset!r}; drop --dataset or pass the right file")
    info = dataset_info(dataset)
    split = ev.load_test_split(prepared_dir)
    scores = ev.score_predictions(preds, split, dataset)
    model_name = preds.model or pred_path.stem
    mode = mode or _guess_mode(model_name)
    atomic_write_json(out_dir / "scores.json", {"dataset": dataset, "model": preds.model,
                                                 "prepared_dir": str(prepared_dir),
                                                 "predictions": str(pred_path), "scores": scores})
    atomic_write_text(out_dir / "results.md",
                      ev.markdown_report(scores, dataset, Path(model_name).name, mode))
    pred = ev.align_predictions(preds, split)
    gt = np.asarray(split.landmarks_px, dtype=np.float64)
    nme = ev.per_image_nme(pred, gt, dataset)
    curves = {}
    for name, how in info.test_subsets.items():
        mask = ev.subset_mask(split, how)
        if mask.any():
            curves[f"{name} ({int(mask.sum())})"] = nme[mask]
    ev.save_ced_plot(curves, out_dir / "ced.png", title=f"{Path(model_name).name} on {dataset}")
    k = min(samples, len(split))
    if k > 0:
        idx = np.unique(np.linspace(0, len(split) - 1, k).round().astype(int))
        boxes, s = np.asarray(split.crop_boxes)[idx], split.input_size
        ids = split.ids
        ev.save_sample_grid(np.asarray(split.images[idx]), ev.to_crop_px(gt[idx], boxes, s),
                            ev.to_crop_px(pred[idx], boxes, s), out_dir / "samples.png",
                            titles=[f"{ids[i][-24:]}  NME {100 * nme[i]:.1f}%" for i in idx])
    return scores


def _print_scores(scores: dict, out_dir: Path) -> None:
    for name, r in scores.items():
        if not r.get("count"):
            print(f"{name:>12}: no faces")
            continue
        frs = "  ".join(f"{k.upper()} {v:5.2f}%" for k, v in r.items() if k.startswith("fr@"))
        print(f"{name:>12}: {r['count']:5d} faces  NME io {r['nme_interocular']:6.3f}%  "
              f"ip {r['nme_interpupil']:6.3f}%  {frs}  AUC@0.1 {r['auc@0.1']:.4f}")
    print(f"results: {out_dir}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    # 1. Score an existing predictions file.
    if args.predictions:
        import evaluation as ev

        pred_path = Path(args.predictions)
        preds = ev.read_predictions(pred_path)
        dataset = (args.dataset or preds.dataset).lower()
        prepared = args.prepared_dir or preds.prepared_dir
        if not prepared:
            raise ConfigError(f"{pred_path}: no prepared_dir in the file; pass --prepared-dir")
        out_dir = _out_dir(args, Path(preds.model or pred_path.stem))
        scores = score_and_report(pred_path, Path(prepared), out_dir, dataset, args.mode, args.samples)
        _print_scores(scores, out_dir)
        return 0

    dataset = (args.dataset or "300w").lower()
    info = dataset_info(dataset)
    model_path = Path(args.model) if args.model else _default_model(dataset)

    # 2. Export.
    if args.export:
        import export

        out = Path(args.out_dir or MODELS_DIR / "export")
        if args.export == "savedmodel":
            model, stem = export._load_keras(model_path)
            print(f"SavedModel: {export.export_savedmodel(model, out / f'{stem}_savedmodel')}")
            return 0
        argv2 = ["--model", str(model_path), "--out", str(out), "--dataset", dataset,
                 "--int8-io", args.int8_io]
        if args.prepared_dir:
            argv2 += ["--prepared-dir", args.prepared_dir]
        return export.main(argv2)

    from inference import load_predictor

    predictor = load_predictor(model_path)

    # 3. Inference on photos / videos.
    if args.image or args.folder or args.video:
        import inference

        out_dir = _out_dir(args, model_path)
        if args.image:
            rec = inference.run_on_image(predictor, args.image, out_dir, args.box)
            print(f"{len(rec['faces'])} face(s) in {args.image}: "
                  f"{out_dir / (Path(args.image).stem + '_landmarks.json')}")
        elif args.folder:
            rec = inference.run_on_folder(predictor, args.folder, out_dir, args.box)
            print(f"{len(rec['images'])} image(s) with faces, {len(rec['failed'])} without: "
                  f"{out_dir / 'all.json'}")
        else:
            rec = inference.run_on_video(predictor, args.video, out_dir, args.box,
                                         max_frames=args.max_frames)
            print(f"{rec['frames_with_face']}/{len(rec['frames'])} frames with a face: "
                  f"{out_dir / (Path(args.video).stem + '_landmarks.json')}")
        return 0

    # 4. Evaluate on the prepared test split.
    import evaluation as ev

    if predictor.num_points != info.num_points:
        raise ModelError(f"{model_path}: predicts {predictor.num_points} points, {dataset} has "
                         f"{info.num_points}; pass the model of this dataset")
    prepared = Path(args.prepared_dir) if args.prepared_dir else \
        PrepareConfig(dataset=dataset, input_size=predictor.input_size).resolved_out_dir()
    split = ev.load_test_split(prepared)
    if split.input_size != predictor.input_size:
        raise ModelError(f"{model_path}: input {predictor.input_size}px but {prepared} holds "
                         f"{split.input_size}px crops; pass the prepared dir of the model's size")
    out_dir = _out_dir(args, model_path)
    pred_px = predict_split(predictor, split, args.batch_size)
    pred_path = ev.write_predictions(out_dir / "predictions.json", dataset, prepared, str(model_path),
                                     split.ids, pred_px)
    scores = score_and_report(pred_path, prepared, out_dir, dataset, args.mode, args.samples)
    _print_scores(scores, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
