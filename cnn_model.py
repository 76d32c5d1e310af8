"""The two networks of the paper (METHOD.md section 2), their persistence and their cost.

* `build_student(num_points, input_size=224, width_multiplier=1.0, weights=None)`: MobileNetV2
  (no top) -> global average pooling (1280 at width 1.0) -> linear Dense(2N) named "landmarks".
* `build_teacher(num_points, input_size=224, dropout=0.5, weights=None)`: EfficientNet-B3 (no top)
  -> global average pooling (1536) -> Dropout(0.5) -> linear Dense(2N) named "landmarks".

Both take float32 RGB images in [0, 1] of shape (B, S, S, 3) and return (B, 2N) float32 landmarks
ordered x0, y0, x1, y1, ... in the normalised crop coordinates of docs/ARCHITECTURE.md. Each model
maps [0, 1] to what its backbone expects, so ImageNet weights (`weights="imagenet"`) see the same
pixel statistics as in their own training:
  - MobileNetV2 expects [-1, 1]: a `Rescaling(2, offset=-1)` layer ("to_minus1_1") comes first;
  - Keras' EfficientNet rescales 0-255 by 1/255 inside the backbone: a `Rescaling(255)` layer
    ("to_0_255") comes first. Its Normalization layer holds the ImageNet mean/variance only when
    those weights are loaded; un-pretrained (weights=None, as published) it holds mean 0 and
    variance 1, the identity, so the teacher then sees [0, 1] pixels unnormalised.
The published models are trained from scratch (`weights=None`, the default). The final Dense is
float32 so the output stays float32 under a mixed-precision policy.

`save_model` writes a `.keras` file atomically; `load_model` reads one back and checks it against the
data (point count, input size) with one-line `errors.ModelError`s. `count_params` and `model_flops`
(multiply-adds per image) measure the networks; `python cnn_model.py --summary` prints both for the
student and the teacher.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from configuration import (MAX_INPUT_SIZE, MAX_POINTS, MIN_INPUT_SIZE, TEACHER_STOCHASTIC_DEPTH,
                           check_input_size)
from errors import ConfigError, ModelError, run_cli
from runtime import quiet_tensorflow

quiet_tensorflow()

from safe_io import atomic_path  # noqa: E402

if TYPE_CHECKING:   # annotations only; keras is imported where it is used
    import keras

# Keras (and TensorFlow behind it) is imported inside the functions that need it, so that
# `python cnn_model.py --help` and the argument checks answer at once.


def _keras():
    import keras  # noqa: PLC0415

    return keras

STUDENT_NAME = "student"
TEACHER_NAME = "teacher"
OUTPUT_LAYER = "landmarks"


def _check_args(num_points, input_size, weights):
    if not 1 <= int(num_points) <= MAX_POINTS:
        raise ConfigError(f"num_points={num_points}: must lie in 1 .. {MAX_POINTS} landmarks")
    check_input_size(input_size, "input size")
    if weights is not None and weights != "imagenet" and not Path(str(weights)).is_file():
        raise ConfigError(f"weights={weights!r}: use None (from scratch), 'imagenet', the path of "
                          f"an existing backbone weights file or of a .keras landmark model")


def _backbone_weights(weights):
    """What keras.applications gets: a saved .keras landmark model is loaded after the build."""
    return None if weights is not None and str(weights).endswith(".keras") else weights


def _init_from_saved(model, weights):
    """Start `model` from every weight of a saved landmark model of the same network, point count
    and width (any input size: no weight depends on it), e.g. to fine-tune a shipped student on
    one's own data."""
    if weights is None or not str(weights).endswith(".keras"):
        return model
    saved = load_model(weights)
    shapes = [tuple(w.shape) for w in saved.weights]
    if saved.name != model.name or shapes != [tuple(w.shape) for w in model.weights]:
        raise ConfigError(f"{weights}: a {saved.name} for {saved.output_shape[-1] // 2} points does "
                          f"not fit the {model.name} being built ({model.output_shape[-1] // 2} points) "
                          f"with other weights; train with that model's network, --width-multiplier "
                          f"and number of points")
    model.set_weights(saved.get_weights())
    return model


def _backbone(factory, what, weights, **kwargs):
    """Build a keras.applications backbone; turn a failed weights download into a ModelError."""
    try:
        return factory(include_top=False, weights=weights, **kwargs)
    except ValueError as err:
        if weights is None:
            raise
        raise ConfigError(f"{what} with weights={weights!r}: {str(err).splitlines()[0]}") from None
    except Exception as err:  # download failures surface as several exception types
        if weights is None:
            raise
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ModelError(f"{what}: could not load weights={weights!r} ({first}); this machine may "
                         f"be offline: train from scratch with weights=None (the published "
                         f"setting) or place the Keras weights file in ~/.keras/models/") from None


# Keras's MobileNetV2 sets BatchNormalization momentum 0.999, made for ImageNet-length runs: after a
# few hundred steps from scratch its moving statistics are still mostly their initial values, so the
# model in inference mode (validation, test, export) is far worse than in training mode (measured:
# an L2 student at 64 px, 360 steps, validation NME 60% against 32% for the same run's KD student).
# The students use the Keras default 0.99, as EfficientNet does.
STUDENT_BN_MOMENTUM = 0.99


def set_batchnorm_momentum(model, momentum: float) -> None:
    """Set the moving-statistics momentum of every BatchNormalization layer (nested models too)."""
    keras = _keras()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)


def set_batchnorm_frozen(model, frozen: bool) -> int:
    """Freeze (or release) every BatchNormalization layer of `model` (nested models too); returns
    how many layers changed. A frozen layer (trainable=False) normalises with its moving statistics
    in training steps too and updates nothing: neither the statistics nor its scale and offset.
    The trainer's --freeze-batchnorm-epochs: in training mode a crop far outside the training
    distribution is normalised by its own batch's variance and looks harmless; frozen, training
    sees what inference sees (docs/results/training_on_cpu.md, "The KD students' swings").
    Recompile after changing it: the set of trainable variables changes."""
    keras = _keras()
    changed = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable == bool(frozen):
            layer.trainable = not frozen
            changed += 1
    return changed


def carry_optimizer_state(old, new, variables) -> None:
    """Build optimizer `new` on `variables` (a model's trainable variables, e.g. after
    set_batchnorm_frozen changed them) with the state of `old`: its iteration count (a schedule's
    position) and the slots (Adam's moments) of every variable both know, matched by name; the
    others start at zero. Backend-agnostic (the GPU script uses it under JAX)."""
    if not getattr(new, "built", False):
        new.build(variables)
    prefix_old, prefix_new = old.name + "/", new.name + "/"
    by_name = {v.path[len(prefix_old):] if v.path.startswith(prefix_old) else v.path: v
               for v in old.variables}
    for dst in new.variables:
        src = by_name.get(dst.path[len(prefix_new):] if dst.path.startswith(prefix_new) else dst.path)
        if src is not None and tuple(src.shape) == tuple(dst.shape):
            dst.assign(src)


# EfficientNet's stochastic depth: keras.applications drops block b's residual branch (of B blocks,
# counted over the whole network) with probability drop_connect_rate * b / B, default 0.2; the
# Dropout layers are named block<stage><letter>_drop (the default rate: configuration.py).
_BLOCK = re.compile(r"^block(\d+)([a-z])_")


def set_stochastic_depth(model, rate: float) -> int:
    """Set the stochastic-depth rate of an EfficientNet inside `model` (nested models too), keeping
    Keras' linear rise over the blocks; returns the number of Dropout layers set (0 for other
    networks). Call it before the first training step: the rate is read when the step is traced."""
    if not 0.0 <= float(rate) < 1.0:
        raise ConfigError(f"stochastic depth {rate}: must lie in [0, 1)")
    keras = _keras()
    layers = list(model._flatten_layers(include_self=False, recursive=True))
    # network order: stage, then letter (the flattened layers come in no useful order)
    blocks = sorted({(int(m.group(1)), m.group(2)) for m in map(_BLOCK.match, (lay.name for lay in layers))
                     if m})
    count = 0
    for layer in layers:
        match = _BLOCK.match(layer.name)
        if not (match and layer.name.endswith("_drop") and isinstance(layer, keras.layers.Dropout)):
            continue
        layer_rate = float(rate) * blocks.index((int(match.group(1)), match.group(2))) / len(blocks)
        if layer_rate > 0 and getattr(layer, "seed_generator", None) is None:
            raise ConfigError(f"{model.name}: this model was saved without stochastic depth and "
                              f"cannot be given one; train it with stochastic depth 0, or start "
                              f"from a freshly built network")
        layer.rate = layer_rate
        count += 1
    return count


def traced_call(model, training: bool):
    """`model(x, training=...)` traced once per model and mode for any batch size, cached on the
    model (under a distribution strategy it runs on the primary replica's variables)."""
    import tensorflow as tf  # noqa: PLC0415

    attr = "_traced_train_call" if training else "_traced_infer_call"
    fn = getattr(model, attr, None)
    if fn is None:
        spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32)
        fn = tf.function(lambda x: model(x, training=training), input_signature=[spec])
        try:
            setattr(model, attr, fn)
        except Exception:  # noqa: BLE001  (a model that refuses new attributes: trace each time)
            pass
    return fn


# Fused batch norm for training on the TensorFlow backend. Keras 3 computes BatchNormalization from
# element-wise ops (tf.nn.moments, then x * rsqrt(var + eps) * gamma + beta; the gradient is as many
# ops again): 32-37% of the student's CPU training step (bench/speed/training_profile.md).
# TensorFlow's fused kernel (FusedBatchNormV3, oneDNN's when TF_ENABLE_ONEDNN_OPTS=1) does the same
# in one op forward and one backward. `fused_batchnorm()` swaps it in for the layers' training-mode
# call while it is active (training.fit_model wraps fit in it); everything else is Keras' own code:
# the same variables, the same layer class in saved .keras files, inference mode untouched.
FUSED_BN_ENV = "LANDMARKS_FUSED_BN"      # "0": keep Keras' own batch norm in training too
_bn_original_call = None
_bn_fused_depth = 0


def _fused_bn_applies(layer, inputs, training, mask) -> bool:
    import tensorflow as tf  # noqa: PLC0415

    return (bool(training) and layer.trainable and mask is None and not layer.renorm
            and not layer.synchronized and len(inputs.shape) == 4 and layer.axis in (-1, 3)
            and layer.epsilon >= 1.001e-5          # cuDNN's lower bound, should this run on a GPU
            and tf.as_dtype(inputs.dtype) in (tf.float32, tf.float16, tf.bfloat16))


def _fused_bn_call(self, inputs, training=None, mask=None):
    """keras.layers.BatchNormalization.call with TensorFlow's fused kernel in training mode for
    NHWC inputs; Keras' own call otherwise. Same results as Keras to float32 rounding: output
    gamma * (x - mean) / sqrt(var + epsilon) + beta with the batch's mean and biased variance;
    moving_mean/moving_variance updated as Keras does (m * momentum + batch * (1 - momentum)) with
    the biased variance too (the kernel returns var * n / (n - 1), Bessel's correction, which
    Keras 3 does not apply: undone here)."""
    if not _fused_bn_applies(self, inputs, training, mask):
        return _bn_original_call(self, inputs, training=training, mask=mask)
    import tensorflow as tf  # noqa: PLC0415

    x = tf.convert_to_tensor(inputs)
    channels = x.shape[-1]
    scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones((channels,), tf.float32)
    offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros((channels,), tf.float32)
    moving_mean = tf.cast(self.moving_mean, tf.float32)
    moving_variance = tf.cast(self.moving_variance, tf.float32)
    empty = tf.constant([], tf.float32)
    y, mean, unbiased_var = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=scale, offset=offset, mean=empty, variance=empty, epsilon=self.epsilon,
        exponential_avg_factor=1.0, data_format="NHWC", is_training=True)[:3]
    shape = tf.shape(x)
    n = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
    variance = unbiased_var * tf.where(n > 1.0, (n - 1.0) / tf.maximum(n, 1.0), 1.0)
    self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
    self.moving_variance.assign(moving_variance * self.momentum
                                + variance * (1.0 - self.momentum))
    return tf.cast(y, self.compute_dtype)


def _fast_fused_kernel() -> bool:
    """True where TensorFlow's fused batch norm is the faster one: oneDNN on (its kernel) or a GPU.
    TensorFlow's own CPU kernel (oneDNN off) measured slower than Keras' ops on this 2-core CPU
    (teacher step 0.60x, student 0.96x; bench/speed/fused_batchnorm.md)."""
    import tensorflow as tf  # noqa: PLC0415

    try:
        from tensorflow.python.util import _pywrap_util_port  # noqa: PLC0415

        if _pywrap_util_port.IsMklEnabled():
            return True
    except (ImportError, AttributeError):
        pass
    return bool(tf.config.list_physical_devices("GPU"))


@contextlib.contextmanager
def fused_batchnorm(enabled: bool = True, only_if_faster: bool = True):
    """While active, keras.layers.BatchNormalization runs TensorFlow's fused kernel in training mode
    (see _fused_bn_call); yields whether it is on. A no-op (yields False) on other Keras backends
    (JAX), when `enabled` is false, when the environment sets LANDMARKS_FUSED_BN=0, or, with
    `only_if_faster`, on a CPU with oneDNN off (TF_ENABLE_ONEDNN_OPTS=0). Takes effect for
    functions traced while it is active (fit's train function is traced on its first step).

    Measured side by side on this 2-core CPU, oneDNN on (bench/speed/fused_batchnorm.md):
    the demo's KD student step 1.14-1.58x the images/s of Keras' batch norm, the teacher's 1.18x."""
    global _bn_original_call, _bn_fused_depth
    keras = _keras()
    if (not enabled or keras.backend.backend() != "tensorflow"
            or os.environ.get(FUSED_BN_ENV, "1").strip() == "0"
            or (only_if_faster and not _fast_fused_kernel())):
        yield False
        return
    cls = keras.layers.BatchNormalization
    if _bn_fused_depth == 0:
        _bn_original_call = cls.call
        cls.call = _fused_bn_call
    _bn_fused_depth += 1
    try:
        yield True
    finally:
        _bn_fused_depth -= 1
        if _bn_fused_depth == 0:
            cls.call = _bn_original_call


def _training_call(model):
    """model(x, training=True) on a float32 array: traced once under TensorFlow; an eager call on
    the other backends (JAX on the GPU machine), where it updates the BatchNorm variables too."""
    if _keras().backend.backend() != "tensorflow":
        return lambda x: model(x, training=True)
    import tensorflow as tf  # noqa: PLC0415
    traced = traced_call(model, training=True)
    return lambda x: traced(tf.constant(x))


def recalibrate_batchnorm(model, images, batch_size: int) -> int:
    """Re-estimate every BatchNormalization layer's moving statistics from `images` (float32 in
    [0, 1]) with the current weights ("precise BN"). Returns the number of batches used.

    Why: the moving averages lag the weights. Measured on a 64 px L2 student after 360 steps from
    scratch (momentum 0.99): test MSE 0.0153 in inference mode against 0.0045 with batch statistics;
    re-estimated on 600 training faces, inference mode gives 0.0040.
    How: one traced forward pass per batch in training mode with momentum 0 (the moving statistics
    become that batch's), summed here; the result is the mean of the per-batch means and variances.
    Only BatchNormalization state changes; weights and the layers' momentum are left as found.
    Dropout stays as in training: the teacher head's comes after the last BatchNorm, and
    EfficientNet's stochastic depth (Dropout inside the blocks) is part of the statistics the
    later layers were trained with (switching it off here did not help the shipped Tough teacher).
    What to pass: crops drawn as training draws them (training.recalibration_images), in an order
    that mixes them as training batches did, and `batch_size` = the TRAINING batch size: in training
    mode every layer normalises with its own batch's statistics, so the statistics deeper layers see
    depend on the batch size. Validation NME of the converged KD student (trained in batches of 64)
    over three draws of 1024 crops: 5.12-5.20% re-estimated in batches of 64, 6.19-8.93% in batches
    of 128; the converged L2 student 3.67% and 3.66% (bench/studies/batchnorm/bn_fragility.md). A last batch
    shorter than `batch_size` is left out unless it is the only one.
    """
    import numpy as np  # noqa: PLC0415

    keras = _keras()
    layers = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
              if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    count = len(images)
    if not layers or count == 0:
        return 0
    batch_size = int(batch_size)
    full = count - count % batch_size if count >= batch_size else count   # whole batches only
    fn = _training_call(model)   # momentum is 0 whenever it runs (set below)
    saved = [layer.momentum for layer in layers]
    sums = [[np.zeros(layer.moving_mean.shape, np.float64), np.zeros(layer.moving_variance.shape, np.float64)]
            for layer in layers]
    batches = 0
    try:
        for layer in layers:
            layer.momentum = 0.0
        for start in range(0, full, batch_size):
            fn(np.asarray(images[start:start + batch_size], dtype=np.float32))
            batches += 1
            for (mean_sum, var_sum), layer in zip(sums, layers):
                mean_sum += keras.ops.convert_to_numpy(layer.moving_mean)
                var_sum += keras.ops.convert_to_numpy(layer.moving_variance)
        for (mean_sum, var_sum), layer in zip(sums, layers):
            layer.moving_mean.assign((mean_sum / batches).astype(np.float32))
            layer.moving_variance.assign((var_sum / batches).astype(np.float32))
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return batches


def build_student(num_points: int, input_size: int = 224, width_multiplier: float = 1.0,
                  weights=None, bn_momentum: float = STUDENT_BN_MOMENTUM) -> keras.Model:
    """MobileNetV2 (no top) + global average pooling + linear Dense(2N); input RGB in [0, 1]."""
    _check_args(num_points, input_size, weights)
    if not (float(width_multiplier) > 0 and math.isfinite(float(width_multiplier))):
        raise ConfigError(f"width_multiplier={width_multiplier}: must be a positive number")
    keras = _keras()
    layers = keras.layers
    shape = (int(input_size), int(input_size), 3)
    backbone = _backbone(keras.applications.MobileNetV2, "MobileNetV2", _backbone_weights(weights),
                         input_shape=shape, alpha=float(width_multiplier))
    set_batchnorm_momentum(backbone, bn_momentum)
    inputs = keras.Input(shape=shape, name="image", dtype="float32")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(inputs)   # [0, 1] -> [-1, 1]
    x = backbone(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(2 * int(num_points), activation=None, dtype="float32",
                           name=OUTPUT_LAYER)(x)
    return _init_from_saved(keras.Model(inputs, outputs, name=STUDENT_NAME), weights)


def build_teacher(num_points: int, input_size: int = 224, dropout: float = 0.5,
                  weights=None, stochastic_depth: float = TEACHER_STOCHASTIC_DEPTH) -> keras.Model:
    """EfficientNet-B3 (no top) + global average pooling + Dropout + linear Dense(2N); RGB in [0, 1].

    stochastic_depth: EfficientNet's drop-connect rate (Keras' default 0.2; see set_stochastic_depth)."""
    _check_args(num_points, input_size, weights)
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout={dropout}: must lie in [0, 1)")
    keras = _keras()
    layers = keras.layers
    shape = (int(input_size), int(input_size), 3)
    backbone = _backbone(keras.applications.EfficientNetB3, "EfficientNetB3", _backbone_weights(weights),
                         input_shape=shape)
    inputs = keras.Input(shape=shape, name="image", dtype="float32")
    x = layers.Rescaling(255.0, name="to_0_255")(inputs)   # the backbone divides by 255 itself
    x = backbone(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(2 * int(num_points), activation=None, dtype="float32",
                           name=OUTPUT_LAYER)(x)
    model = keras.Model(inputs, outputs, name=TEACHER_NAME)
    set_stochastic_depth(model, stochastic_depth)
    return _init_from_saved(model, weights)


# ----------------------------------------------------------------------------------------------
# Persistence
# ----------------------------------------------------------------------------------------------


def save_model(model: keras.Model, path, float16_weights: bool = False) -> Path:
    """Write `model` to `path` (must end in .keras) atomically; returns the path.

    float16_weights: store the float32 weights as float16 inside the same .keras format (half the
    file or less: 45 -> 19 MB for the teacher, deflated), e.g. to ship models in git. Keras reads such a file with
    plain `keras.models.load_model` into float32 variables; only the stored values are rounded
    (relative error below 5e-4 per weight)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ModelError(f"{path}: model files must end in .keras (Keras checks the extension)")
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        if float16_weights:
            _halve_weights(Path(tmp))
    return path


def _halve_weights(keras_file: Path) -> None:
    """Rewrite the float32 datasets of a .keras archive's model.weights.h5 as float16, in place."""
    import io  # noqa: PLC0415

    import h5py  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    with zipfile.ZipFile(keras_file) as z:
        members = {name: z.read(name) for name in z.namelist()}
    out = io.BytesIO()
    with h5py.File(io.BytesIO(members["model.weights.h5"]), "r") as src, h5py.File(out, "w") as dst:
        dst.attrs.update(dict(src.attrs))

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                dst.create_dataset(name, data=data.astype(np.float16) if data.dtype == np.float32 else data)
            else:
                dst.require_group(name)
            dst[name].attrs.update(dict(obj.attrs))

        src.visititems(copy)
    members["model.weights.h5"] = out.getvalue()
    with zipfile.ZipFile(keras_file, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)


def model_points(model: keras.Model) -> int:
    """Number of landmarks N a model predicts (its output is (B, 2N))."""
    return int(model.output_shape[-1]) // 2


def model_input_size(model: keras.Model) -> int:
    return int(model.input_shape[1])


def load_model(path, expect_points=None, expect_input_size=None) -> keras.Model:
    """Read a `.keras` model written by `save_model`; check point count and input size if given."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: model file not found; train one first (teacher_trainer.py / "
                         f"student_trainer.py) or pass the right path")
    if path.is_dir() or not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a Keras .keras model file (expected a .keras zip archive "
                         f"written by cnn_model.save_model)")
    if path.suffix != ".keras":
        raise ModelError(f"{path}: model files must end in .keras; rename it")
    keras = _keras()
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ModelError(f"{path}: cannot be read as a Keras model ({first[:200]}); the file may "
                         f"be damaged or from another Keras version") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{path}: the model has {len(model.inputs)} inputs and "
                         f"{len(model.outputs)} outputs; a landmark model of this project takes one "
                         f"image and gives one (batch, 2N) output")
    inp = tuple(model.inputs[0].shape)
    if len(inp) != 4 or inp[3] != 3 or inp[1] is None or inp[1] != inp[2]:
        raise ModelError(f"{path}: input shape {inp} is not (batch, S, S, 3); not a model of this "
                         f"project")
    out = model.output_shape
    if not isinstance(out, tuple) or len(out) != 2 or out[-1] is None or out[-1] % 2:
        raise ModelError(f"{path}: output shape {out} is not (batch, 2N) landmarks; not a model "
                         f"of this project")
    if expect_points is not None and model_points(model) != int(expect_points):
        raise ModelError(f"{path}: the model predicts {model_points(model)} points but the data has "
                         f"{expect_points}; use a model trained on this dataset")
    if expect_input_size is not None and model_input_size(model) != int(expect_input_size):
        raise ModelError(f"{path}: the model takes {model_input_size(model)}x"
                         f"{model_input_size(model)} inputs but the data is {expect_input_size}x"
                         f"{expect_input_size}; pass --input-size {model_input_size(model)} or "
                         f"retrain")
    return model


# ----------------------------------------------------------------------------------------------
# Cost
# ----------------------------------------------------------------------------------------------


def count_params(model: keras.Model) -> int:
    """All parameters (trainable and not, e.g. batch-norm statistics), as Keras' summary counts."""
    return int(model.count_params())


def _layer_macs(layer) -> int:
    """Multiply-adds of one layer for one image: convolutions and dense layers only."""
    keras = _keras()
    layers = keras.layers
    if isinstance(layer, keras.Model):
        return sum(_layer_macs(sub) for sub in layer.layers)
    if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)):
        out_shape = tuple(layer.output.shape)
        kernel = tuple(layer.kernel.shape)
        if isinstance(layer, layers.Dense):
            return int(kernel[0]) * int(kernel[1])
        h, w = int(out_shape[1]), int(out_shape[2])
        if isinstance(layer, layers.DepthwiseConv2D):
            # kernel (kh, kw, C, depth_multiplier): one kh*kw filter per output channel
            return h * w * int(kernel[0]) * int(kernel[1]) * int(kernel[2]) * int(kernel[3])
        # Conv2D kernel (kh, kw, C_in / groups, C_out)
        return h * w * int(kernel[0]) * int(kernel[1]) * int(kernel[2]) * int(kernel[3])
    return 0


def model_flops(model: keras.Model) -> int:
    """Multiply-adds per image (convolutions, depthwise convolutions, dense layers; batch norm,
    activations, pooling and element-wise products are not counted, the usual convention behind
    MobileNetV2's '300 M' and EfficientNet-B3's '1.8 G at 300')."""
    return int(sum(_layer_macs(layer) for layer in model.layers))


def _summary_line(name, model):
    return (f"{name:8s} {model.name:8s} input {model_input_size(model)}  points "
            f"{model_points(model)}  params {count_params(model):,} ({count_params(model) / 1e6:.2f} M)"
            f"  multiply-adds {model_flops(model) / 1e9:.3f} G")


def _whole_number(text: str) -> int:
    """An integer option that also takes exponent notation (1e3); the range is checked later."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value == int(value)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--summary", action="store_true",
                        help="print parameter counts and multiply-adds of both networks")
    parser.add_argument("--num-points", type=_whole_number, default=68,
                        help=f"landmarks per face, 1 to {MAX_POINTS} (default: 68)")
    parser.add_argument("--input-size", type=_whole_number, default=224,
                        help=f"input side in pixels, {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE} "
                             f"(default: 224)")
    parser.add_argument("--width-multiplier", type=float, default=1.0,
                        help="MobileNetV2 width (alpha) of the student summarised (default: 1.0)")
    parser.add_argument("--float16-weights", nargs=2, metavar=("SRC", "DST"),
                        help="copy model SRC to DST (.keras) with its weights stored as float16 "
                             "(half the size; how models/teachers/ are shipped); DST must be a new "
                             "file (SRC itself is refused)")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --float16-weights: replace an existing DST (never SRC)")
    args = parser.parse_args(argv)
    if args.float16_weights:
        from safe_io import OutputLock, check_output_file  # noqa: PLC0415

        src, dst = args.float16_weights
        if Path(src).exists() and Path(dst).exists() and os.path.samefile(src, dst):
            raise ConfigError(f"--float16-weights {src} {dst}: DST is SRC, the only copy would be "
                              f"rewritten with rounded weights; name a new DST file")
        with OutputLock(dst, "--float16-weights DST"):
            check_output_file(dst, overwrite=args.overwrite, option="--float16-weights DST")
            save_model(load_model(src), dst, float16_weights=True)
        print(f"{src} -> {dst} ({Path(dst).stat().st_size / 2**20:.1f} MiB, float16 weights)")
        return 0
    check_input_size(args.input_size)
    if not 1 <= args.num_points <= MAX_POINTS:
        raise ConfigError(f"--num-points {args.num_points}: must lie in 1 .. {MAX_POINTS} landmarks")
    if not args.summary:
        parser.print_help()
        return 0
    student = build_student(args.num_points, args.input_size, args.width_multiplier)
    print(_summary_line("student", student))
    teacher = build_teacher(args.num_points, args.input_size)
    print(_summary_line("teacher", teacher))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
