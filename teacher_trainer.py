"""Train a teacher (METHOD.md sections 2, 3, 6): EfficientNet-B3 with L2 against the hard landmarks
(the Tough teacher) or against the soft landmarks of an Active Shape Model (the Tolerant teacher).

    python teacher_trainer.py --dataset 300w --teacher tough      [TrainConfig options]
    python teacher_trainer.py --dataset 300w --teacher tolerant   [--asm-variance 0.9]
    python teacher_trainer.py --preset quick                      (64 px, 3 epochs: a CPU try-out)

With no arguments it trains the Tough teacher on the embedded synthetic 300W data (generated and
prepared on first use). The run folder (runs/<dataset>-teacher-<kind>, or --run-dir) holds
config.json, log.csv, TensorBoard logs, last.keras/state.json (every epoch) and best.keras (best
validation NME); running the same command again resumes. The best model is written to
<run folder>/model.keras (or --output; a shipped model in models/ is never replaced by default).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional

from errors import ConfigError, run_cli
from runtime import quiet_tensorflow

quiet_tensorflow()

import configuration as C  # noqa: E402
import training  # noqa: E402

TEACHERS = ("tough", "tolerant")


def default_output(cfg: C.TrainConfig, teacher: str) -> Path:
    """The final model when no --output is given: in the run folder, never a shipped model."""
    return training.default_run_dir(cfg, f"teacher-{teacher}") / training.FINAL


def train_teacher(cfg: C.TrainConfig, teacher: str = "tough", output=None,
                  builder: Optional[Callable] = None, verbose: Optional[int] = None,
                  checkpoint_every: int = 0, info: Optional[C.DatasetInfo] = None, overwrite: bool = False) -> training.TrainResult:
    """Train (or resume) one teacher; returns the run's result. `builder(num_points, input_size)`
    replaces EfficientNet-B3 (tests use a tiny network). `output` (default: model.keras in the run
    folder) must not be an existing file this run did not write, unless `overwrite`."""
    if teacher not in TEACHERS:
        raise ConfigError(f"--teacher {teacher!r}: choose tough or tolerant")
    info = training.run_dataset(cfg, info)   # main's (a custom spec read once), else cfg's
    out = Path(output) if output else None
    training.check_outputs(cfg, f"teacher-{teacher}", out)   # before any data or model work
    strategy = training.setup_runtime(cfg)
    # the run folder (lock, resume check) before the data: a refused resume rewrites nothing
    run = training.Run(cfg, f"teacher-{teacher}", strategy, info=info, output=out, overwrite=overwrite,
                       inputs={"--weights": training.weights_file(cfg)})
    try:
        data = training.load_training_data(cfg, need_soft=(teacher == "tolerant"), info=info)
    except BaseException:
        run.release()
        raise
    info = data.info
    import cnn_model  # noqa: PLC0415

    def build():
        if builder is not None:
            return builder(info.num_points, cfg.input_size)
        return cnn_model.build_teacher(info.num_points, cfg.input_size, dropout=cfg.teacher_dropout,
                                       weights=cfg.weights,
                                       stochastic_depth=cfg.teacher_stochastic_depth)

    augment_fn = training.online_augment(cfg, info)
    model = training.restore_or_build(cfg, run, strategy, build,
                                     steps_per_epoch=data.steps_per_epoch())
    # a resumed run takes the current setting (a warm restart may change it); 0 layers elsewhere
    cnn_model.set_stochastic_depth(model, cfg.teacher_stochastic_depth)
    result = training.fit_model(cfg=cfg, run=run, data=data, strategy=strategy, model=model,
                                targets="soft" if teacher == "tolerant" else "landmarks",
                                augment_fn=augment_fn, output=run.output, verbose=verbose,
                                checkpoint_every=checkpoint_every)
    result.report(f"{teacher} teacher", verbose)
    return result


def main(argv=None, builder: Optional[Callable] = None) -> int:
    parser = training.build_parser(__doc__.split("\n\n")[0],
                                   skip=("student_mode", "cache_teacher_predictions", "teacher_flip_test",
                                         "loss_preset", "width_multiplier"))
    parser.add_argument("--teacher", choices=TEACHERS, default="tough",
                        help="tough: L2 on the ground truth; tolerant: L2 on the soft landmarks")
    args = parser.parse_args(argv)
    cfg = training.config_from_args(args, trainer="teacher")
    info = training.run_dataset(cfg)          # the dataset (a custom spec) read once, here
    train_teacher(cfg, args.teacher, output=args.output, builder=builder, verbose=args.verbose, info=info,
                  checkpoint_every=args.checkpoint_every, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
