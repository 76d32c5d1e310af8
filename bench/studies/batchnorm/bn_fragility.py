"""BatchNorm fragility: how much a model's inference-mode validation NME depends on how its BatchNorm
statistics are re-estimated (which training crops, in batches of what size), beside the per-crop
energy before its last BatchNorm layer, whose extreme outliers (a few crops thousands of times the
median crop) set the KD-Loss students apart from the L2 ones.

    python bench/studies/batchnorm/bn_fragility.py --config RUN/config.json --models A.keras [B.keras ...] \
        [--names NAME ...] [--draws 4] [--crops 1024] [--batch-sizes 64 128]

--config (or the trainer's own --prepared-dir, --augment, --aug-copies, --seed, --val-fraction) must
be a run's own, so that the pool and the validation faces are the ones the models were trained and
selected on; several models of the same data can share it. For each model:
* the per-crop energy (mean square) of the input of its last BatchNormalization layer (MobileNetV2:
  Conv_1, EfficientNet: top_conv) over 4096 pool crops: median, 99th percentile, maximum, and the
  share of the total held by the top 1% of crops;
* the validation NME after re-estimation (cnn_model.recalibrate_batchnorm) on --draws independent
  draws of each --crops count, in batches of each --batch-sizes (default: the run's training batch,
  what the trainers use, and 128, what they used until 2026-11-28): min - max (mean).
Appends one row per model to bench/studies/batchnorm/bn_fragility.md (--out elsewhere).
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

ENERGY_CROPS = 4096


def last_bn_input_model(model):
    """A model from `model`'s input to the input of its last BatchNormalization layer (the nested
    backbone's; the outer layers before the backbone, its input scaling, are applied first)."""
    import keras
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    last_bn = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)][-1]
    inner = keras.Model(backbone.input, last_bn.input)
    x = inputs = keras.Input(model.input_shape[1:])
    for layer in model.layers:
        if layer is backbone:
            break
        if not isinstance(layer, keras.layers.InputLayer):
            x = layer(x)
    return keras.Model(inputs, inner(x)), last_bn.name


def crop_energy(model, images: np.ndarray) -> tuple:
    """Per-crop mean square of the last BatchNorm layer's input; and that layer's name."""
    sub, name = last_bn_input_model(model)
    feats = sub.predict(images, batch_size=128, verbose=0)
    return np.mean(np.square(feats.reshape(len(feats), -1)), axis=1), name


def energy_summary(energy: np.ndarray) -> tuple:
    """(median, 99th percentile, max, share of the total held by the top 1% of crops)."""
    top = max(1, int(round(0.01 * len(energy))))
    return (float(np.median(energy)), float(np.percentile(energy, 99)), float(energy.max()),
            float(np.sort(energy)[-top:].sum() / energy.sum()))


def pool_draw(data, count: int, draw: int) -> np.ndarray:
    """`count` crops of the training pool, float32 in [0, 1], seeded by the run's seed and `draw`,
    in random order (each re-estimation batch mixes plain and augmented crops)."""
    rng = np.random.default_rng([int(data.cfg.seed), 7919, 1000 + int(draw)])
    rows = rng.choice(data.size, min(int(count), data.size), replace=False)
    return data.pool_images(rows).astype(np.float32) / np.float32(255.0)


def main(argv=None) -> int:
    import training
    from precise_bn import run_parser
    parser = run_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="trained .keras models of this run's data")
    parser.add_argument("--names", nargs="+", default=None, help="their names in the table (default: the paths)")
    parser.add_argument("--draws", type=int, default=4, help="independent draws per crop count (default 4)")
    parser.add_argument("--crops", type=int, nargs="+", default=[1024],
                        help="pool crops per re-estimation, one column each (default: 1024)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help="re-estimation batch sizes, one column each (default: the run's "
                             "--batch-size, then 128)")
    parser.add_argument("--out", default=None, help="results file (default bench/studies/batchnorm/bn_fragility.md)")
    args = parser.parse_args(argv)
    if args.names and len(args.names) != len(args.models):
        parser.error(f"--names: {len(args.names)} names for {len(args.models)} models; give one per model")
    import cnn_model

    cfg = training.config_from_args(args, trainer="student")
    data = training.load_training_data(cfg)
    val_x, val_y = data.val_images(), data.val_landmarks()
    energy_x = pool_draw(data, ENERGY_CROPS, -1)
    train_batch = training.replica_batch_size(cfg)
    sizes = args.batch_sizes or [train_batch, 128]

    def batches(b):   # the default first size is the run's own, whatever its value
        return "the training size" if b == train_batch and not args.batch_sizes else f"batches of {b}"
    setups = [(n, b) for b in sizes for n in args.crops]
    columns = ["model (last BatchNorm layer; training batch)", "last BatchNorm input, per-crop energy: median / p99 / max",
               "share of energy in the top 1% of crops"] + \
              [f"val NME % re-estimated on {n} crops in {batches(b)}, {args.draws} draws: min - max (mean)"
               for n, b in setups] + ["command"]
    command = command_line(__file__, argv)
    out_path = results_path("bn_fragility", False, args.out)
    names = [(args.names[i] if args.names else p) for i, p in enumerate(args.models)]
    rows = [r for r in existing_rows(out_path, columns) if r[0].rsplit(" (", 1)[0] not in names]
    for i, path in enumerate(args.models):
        energy, layer = crop_energy(cnn_model.load_model(path), energy_x)
        median, p99, top, share = energy_summary(energy)
        row = [names[i] + f" ({layer}; {train_batch})",
               f"{median:.3g} / {p99:.3g} / {top:.3g}", fmt(share, 3)]
        for count, batch in setups:
            nmes = []
            for draw in range(int(args.draws)):
                model = cnn_model.load_model(path)
                cnn_model.recalibrate_batchnorm(model, pool_draw(data, count, draw), batch)
                nmes.append(100 * training.mean_nme(training.predict_images(model, val_x), val_y, data.info))
            row.append(f"{min(nmes):.2f} - {max(nmes):.2f} ({np.mean(nmes):.2f})")
        rows.append(row + [f"`{command}`"])
        print(md_table(columns, [rows[-1]]), flush=True)
    text = header_block("BatchNorm fragility: outlier crops and the re-estimation draw",
                        ["--config", "RUN/config.json", "--models", "MODEL", "..."],
                        [f"pool crops of each run's own training data ({ENERGY_CROPS} for the energy); "
                         "validation faces of that run; inter-ocular NME, inference mode; one row per model, "
                         "its last column the command that wrote it (rows of other runs are kept)"]) + "\n" + \
        md_table(columns, rows) + "\n"
    write_results(text, out_path)
    record(out_path)                                 # its table, as data (results.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
