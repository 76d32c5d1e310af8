"""configuration.py value by value (issue 37 item 3, mutmut's survivors): every validation bound
accepted at its edge and refused one step beyond with a message naming the option, the command-line
round trip (option names, types, defaults, --no- flags), the presets, the normaliser names, the
spec defaults and the derived folders. Pure and fast: no file is read or written."""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

import configuration as C
from errors import ConfigError

SPEC = {"name": "Five", "num_points": 5, "interocular": [[0], [1]]}


# ---------------------------------------------------------------------------- small helpers


def test_mirror_run_pairs_each_index_with_its_mirror():
    assert C._mirror_run(range(0, 3), range(4, 7)) == [(0, 6), (1, 5), (2, 4)]
    assert C._mirror_run(range(0, 8), range(9, 17))[0] == (0, 16)        # the 300W jaw's ends


@pytest.mark.parametrize("value,expected", [(68, 68), (68.0, 68), (0, 0), (-3.0, -3)])
def test_whole_numbers_are_read_as_ints(value, expected):
    got = C._whole(value, "num_points")
    assert got == expected and type(got) is int


@pytest.mark.parametrize("value", [68.9, True, False, "68", None, [68]])
def test_a_value_that_is_not_a_whole_number_is_refused_by_name(value):
    with pytest.raises(ValueError) as err:
        C._whole(value, "num_points")
    assert str(err.value) == f"num_points: {value!r} is not a whole number"


@pytest.mark.parametrize("size", [C.MIN_INPUT_SIZE, 224, C.MAX_INPUT_SIZE])
def test_input_sizes_at_the_bounds_are_accepted(size):
    assert C.check_input_size(size) == size
    assert C.check_input_size(float(size)) == size and type(C.check_input_size(float(size))) is int


def test_input_sizes_beyond_the_bounds_name_the_option():
    with pytest.raises(ConfigError) as err:
        C.check_input_size(C.MIN_INPUT_SIZE - 1)
    assert str(err.value) == "--input-size 31 is too small; the backbones need at least 32 pixels"
    with pytest.raises(ConfigError) as err:
        C.check_input_size(C.MAX_INPUT_SIZE + 1, "--size")
    assert str(err.value) == "--size 1025 is too large; use at most 1024 pixels (the published setting is 224)"


def test_config_record_names_the_type_and_keeps_fields_and_extra():
    rec = C.config_record(C.PrepareConfig(dataset="cofw"), {"run": {"id": 7}})
    assert rec["type"] == "PrepareConfig" and rec["dataset"] == "cofw" and rec["run"] == {"id": 7}
    assert set(rec) == {"type", "run", *(f.name for f in dataclasses.fields(C.PrepareConfig))}
    assert C.config_record(C.TrainConfig())["type"] == "TrainConfig"


def test_unknown_dataset_and_loss_preset_list_the_choices():
    with pytest.raises(ConfigError) as err:
        C.dataset_info("afw")
    assert "choose one of 300w, cofw, wflw or register" in str(err.value)
    assert C.dataset_info("WFLW") is C.DATASETS["wflw"]
    with pytest.raises(ConfigError) as err:
        C.loss_config("mine")
    assert str(err.value) == "unknown loss preset 'mine'; choose one of code, paper"
    assert C.loss_config("paper") is C.LOSS_PRESETS["paper"]


# ---------------------------------------------------------------------------- normalisers


@pytest.mark.parametrize("kind", ["interocular", "inter-ocular", "io"])
def test_interocular_names(kind):
    assert C.DATASETS["300w"].normaliser(kind) == ((36,), (45,))


@pytest.mark.parametrize("kind", ["interpupil", "inter-pupil", "ip"])
def test_interpupil_names(kind):
    assert C.DATASETS["cofw"].normaliser(kind) == ((16,), (17,))
    assert C.DATASETS["300w"].normaliser(kind) == (tuple(range(36, 42)), tuple(range(42, 48)))


@pytest.mark.parametrize("kind", ["IO", "pupil", ""])
def test_unknown_normaliser_is_refused_with_the_names(kind):
    with pytest.raises(ConfigError) as err:
        C.DATASETS["wflw"].normaliser(kind)
    assert str(err.value) == f"unknown normaliser {kind!r}; use 'interocular' or 'interpupil'"


# ---------------------------------------------------------------------------- custom specs


def test_spec_defaults():
    info = C.DatasetInfo.from_spec(SPEC)
    assert info.flip_pairs == () and info.flip_permutation == [0, 1, 2, 3, 4]
    assert info.interpupil == info.interocular == ((0,), (1,))
    assert info.train_splits == ("train.txt",) and info.test_splits == ("test.txt",)
    assert info.aug_copies == 3 and info.download == "(your own data)"
    assert info.official_format == "custom" and info.test_subsets == {"full": ("all",)}


@pytest.mark.parametrize("n", [2, C.MAX_POINTS])
def test_spec_point_counts_at_the_bounds(n):
    assert C.DatasetInfo.from_spec({**SPEC, "num_points": n}).num_points == n


def test_a_one_point_spec_passes_the_count_check_and_fails_on_its_normaliser():
    with pytest.raises(ConfigError) as err:            # 1 point: a normaliser needs two indices
        C.DatasetInfo.from_spec({**SPEC, "num_points": 1, "interocular": [[0], [0]]}, source="s")
    assert "num_points" not in str(err.value) and "interocular [[0], [0]]" in str(err.value)


@pytest.mark.parametrize("n", [0, C.MAX_POINTS + 1])
def test_spec_point_counts_beyond_the_bounds(n):
    with pytest.raises(ConfigError) as err:
        C.DatasetInfo.from_spec({**SPEC, "num_points": n}, source="s.json")
    assert str(err.value) == f"s.json: num_points {n} must lie in 1 .. 1000"


@pytest.mark.parametrize("change,field", [
    ({"num_points": 5.5}, "num_points: 5.5"),
    ({"flip_pairs": [[0.5, 1]]}, "flip_pairs: 0.5"),
    ({"flip_pairs": [[0, 1.5]]}, "flip_pairs: 1.5"),
    ({"interocular": [[0.5], [1]]}, "interocular: 0.5"),
    ({"interpupil": [[0], [1.5]]}, "interpupil: 1.5"),
    ({"aug_copies": 2.5}, "aug_copies: 2.5"),
])
def test_a_fractional_index_or_count_is_named_in_the_error(change, field):
    with pytest.raises(ConfigError) as err:
        C.DatasetInfo.from_spec({**SPEC, **change})
    assert str(err.value).startswith(f"custom spec: missing or invalid field {field} is not a whole number")


@pytest.mark.parametrize("change", [
    {"interpupil": [[0], [1], [2]]},           # three groups
    {"interocular": [[0], [1], [2]]},
    {"interpupil": [[0]]},
])
def test_each_normaliser_needs_exactly_two_groups(change):
    with pytest.raises(ConfigError, match="each normaliser needs two groups"):
        C.DatasetInfo.from_spec({**SPEC, **change})


@pytest.mark.parametrize("what,groups", [
    ("interocular", [[], [1]]), ("interocular", [[0], []]), ("interocular", [[0, 1], [1, 0]]),
    ("interpupil", [[], [1]]), ("interpupil", [[2], []]), ("interpupil", [[3], [3]]),
])
def test_a_normaliser_needs_two_different_non_empty_groups(what, groups):
    with pytest.raises(ConfigError) as err:
        C.DatasetInfo.from_spec({**SPEC, what: groups}, source="s.json")
    assert str(err.value) == (f"s.json: {what} {groups}: needs two different, non-empty groups of "
                              f"points (the normaliser is the distance between their means; the "
                              f"same group gives 0 and NME nan)")


def test_as_spec_of_a_layout_without_lists_names_the_default_lists():
    bare = dataclasses.replace(C.DatasetInfo.from_spec(SPEC), train_splits=(), test_splits=())
    spec = bare.as_spec()
    assert spec["train_list"] == "train.txt" and spec["test_list"] == "test.txt"
    assert spec["interpupil"] == [[0], [1]]
    assert C.DATASETS["cofw"].as_spec()["interpupil"] == [[16], [17]]
    assert C.DATASETS["cofw"].as_spec()["test_list"] == "test.txt"       # built-ins: no test list
    assert C.DATASETS["cofw"].as_spec()["train_list"] == "COFW_train_color.mat"


# ---------------------------------------------------------------------------- folders


def test_prepare_folders_default_by_dataset_size_and_origin():
    assert C.PrepareConfig(dataset="COFW", input_size=64).resolved_out_dir() == \
        C.PREPARED_DIR / "cofw-synthetic-64"
    assert C.PrepareConfig(dataset="WFLW", root="/d/wflw", input_size=64).resolved_out_dir() == \
        C.PREPARED_DIR / "wflw-64"
    assert C.PrepareConfig(dataset="mine", custom_spec="m.json", input_size=32).resolved_out_dir() == \
        C.PREPARED_DIR / "mine-32"
    assert C.PrepareConfig(out_dir="/x/y").resolved_out_dir() == Path("/x/y")
    assert C.PrepareConfig(dataset="WFLW").resolved_root() == C.SYNTHETIC_DIR / "wflw"
    assert C.PrepareConfig(dataset="WFLW", root="/d/w").resolved_root() == Path("/d/w")


def test_train_config_hands_its_data_fields_to_prepare():
    cfg = C.TrainConfig(dataset="mine", root="/d", input_size=48, custom_spec="m.json", prepared_dir="/p")
    assert cfg.prepare_config() == C.PrepareConfig(dataset="mine", root="/d", input_size=48,
                                                   custom_spec="m.json", out_dir="/p")
    assert C.TrainConfig(dataset="cofw", input_size=64).resolved_prepared_dir() == \
        C.PREPARED_DIR / "cofw-synthetic-64"


# ---------------------------------------------------------------------------- presets


def test_preset_settings_split_by_trainer():
    assert C.preset_settings("quick", "student") == {
        "input_size": 64, "batch_size": 32, "augment": "none", "max_faces": None,
        "lr_schedule": "cosine", "epochs": 16, "freeze_batchnorm_epochs": 3}
    assert C.preset_settings("quick", "teacher") == {
        "input_size": 64, "batch_size": 32, "augment": "none", "max_faces": None,
        "lr_schedule": "cosine", "epochs": 3}
    paper = C.preset_settings("paper", "teacher")
    assert paper["epochs"] == 150 and paper["input_size"] == 224 and paper["batch_size"] == 70
    with pytest.raises(ConfigError) as err:
        C.preset_settings("fast", "teacher")
    assert str(err.value) == "--preset 'fast': choose one of paper, quick"


@pytest.mark.parametrize("frozen,epochs,expected", [(3, 16, 3), (3, 4, 3), (3, 3, 0), (3, 2, 0),
                                                    (0, 5, 0), (2.0, 5.0, 2)])
def test_frozen_epochs_only_when_the_run_is_longer(frozen, epochs, expected):
    got = C.preset_frozen_epochs(frozen, epochs)
    assert got == expected and type(got) is int


# ---------------------------------------------------------------------------- TrainConfig.validate

# field -> (values accepted, values refused); refused ones name the option in the message
BOUNDS = {
    "asm_variance": ([1e-9, 0.5, 1.0], [0.0, -0.1, 1.0000001, 2.0, math.nan]),
    "bn_recalibration": ([0, 1], [-1]),
    "aug_copies": ([None, 0, 1], [-1]),
    "batch_size": ([1, 2], [0, -1]),
    "epochs": ([1, 2], [0]),
    "learning_rate": ([1e-12, 1.0], [0.0, -1e-3, math.inf, math.nan]),
    "lr_decay": ([0.0, 1e-4], [-1e-9, math.inf, math.nan]),
    "val_fraction": ([0.0, 0.5, 0.999], [1.0, -0.01, 1.5, math.nan]),
    "seed": ([0, 2 ** 31 - 1], [-1, 2 ** 31]),
    "width_multiplier": ([1e-6, 1.0], [0.0, -1.0, math.inf, math.nan]),
    "teacher_dropout": ([0.0, 0.999], [1.0, 1.5, -0.1]),
    "teacher_stochastic_depth": ([0.0, 0.999], [1.0, 1.5, -0.1]),
    "max_faces": ([None, 1], [0, -2]),
}
ACCEPTED = [(f, v) for f, (ok, _) in BOUNDS.items() for v in ok]
REFUSED = [(f, v) for f, (_, bad) in BOUNDS.items() for v in bad]


@pytest.mark.parametrize("field,value", ACCEPTED)
def test_validate_accepts_values_at_the_bounds(field, value):
    cfg = C.TrainConfig(**{field: value})
    assert cfg.validate() is cfg


@pytest.mark.parametrize("field,value", REFUSED)
def test_validate_refuses_values_beyond_the_bounds_naming_the_option(field, value):
    with pytest.raises(ConfigError) as err:
        C.TrainConfig(**{field: value}).validate()
    assert str(err.value).startswith("--" + field.replace("_", "-"))


@pytest.mark.parametrize("field,value,message", [
    ("augment", "both", "--augment 'both': choose offline, online or none"),
    ("strategy", "tpu", "--strategy 'tpu': choose default, mirrored or multiworker"),
    ("asm_variance", 0.0, "--asm-variance 0.0: must lie in (0, 1]"),
    ("bn_recalibration", -1, "--bn-recalibration must be >= 0 (0 turns it off)"),
    ("aug_copies", -1, "--aug-copies -1: must be >= 0 (0: no offline copies)"),
    ("batch_size", 0, "--batch-size 0: must be >= 1"),
    ("epochs", 0, "--epochs 0: train at least 1 epoch"),
    ("learning_rate", 0.0, "--learning-rate 0.0: must be a finite number > 0 (the published setting is 1e-3)"),
    ("lr_schedule", "step", "--lr-schedule 'step': choose inverse-time or cosine"),
    ("lr_decay", -1.0, "--lr-decay -1.0: must be a finite number >= 0 (0: a constant learning rate)"),
    ("val_fraction", 1.0, "--val-fraction 1.0: must lie in [0, 1) (0: no validation faces)"),
    ("seed", -1, "--seed -1: must lie in 0 .. 2147483647"),
    ("width_multiplier", 0.0, "--width-multiplier 0.0: must be a finite number > 0"),
    ("teacher_dropout", 1.0, "--teacher-dropout 1.0: must lie in [0, 1)"),
    ("teacher_stochastic_depth", 1.0, "--teacher-stochastic-depth 1.0: must lie in [0, 1)"),
    ("max_faces", 0, "--max-faces 0: must be >= 1"),
    ("input_size", 16, "--input-size 16 is too small; the backbones need at least 32 pixels"),
    ("loss_preset", "mine", "unknown loss preset 'mine'; choose one of code, paper"),
])
def test_validate_messages(field, value, message):
    with pytest.raises(ConfigError) as err:
        C.TrainConfig(**{field: value}).validate()
    assert str(err.value) == message


@pytest.mark.parametrize("frozen,ok", [(0, True), (5, True), (6, False), (-1, False)])
def test_frozen_batchnorm_epochs_lie_in_zero_to_epochs(frozen, ok):
    cfg = C.TrainConfig(epochs=5, freeze_batchnorm_epochs=frozen)
    if ok:
        assert cfg.validate() is cfg
        return
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert str(err.value) == f"--freeze-batchnorm-epochs {frozen}: must lie in 0 .. --epochs (5)"


def test_the_dataset_is_checked_unless_a_custom_spec_names_it():
    with pytest.raises(ConfigError, match="unknown dataset 'mine'"):
        C.TrainConfig(dataset="mine").validate()
    cfg = C.TrainConfig(dataset="mine", custom_spec="mine.json")
    assert cfg.validate() is cfg


# ---------------------------------------------------------------------------- command line


def _parser(cls=C.TrainConfig, **kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t")
    C.add_dataclass_args(p, cls, **kw)
    return p


def test_options_are_the_field_names_with_hyphens_and_typed():
    args = _parser().parse_args(["--batch-size", "8", "--learning-rate", "0.5", "--max-faces", "3",
                                 "--aug-copies", "0", "--asm-variance", "1", "--weights", "imagenet",
                                 "--lr-schedule", "cosine", "--no-resume", "--asm-align"])
    assert (args.batch_size, type(args.batch_size)) == (8, int)
    assert (args.learning_rate, type(args.learning_rate)) == (0.5, float)
    assert (args.max_faces, type(args.max_faces)) == (3, int)             # Optional[int]
    assert (args.aug_copies, type(args.aug_copies)) == (0, int)
    assert (args.asm_variance, type(args.asm_variance)) == (1.0, float)
    assert args.weights == "imagenet" and args.lr_schedule == "cosine"
    assert args.resume is False and args.asm_align is True
    with pytest.raises(SystemExit):
        _parser().parse_args(["--batch-size", "8.5"])                      # an int option


def test_options_not_given_are_none_so_the_defaults_come_from_the_class():
    args = _parser().parse_args([])
    assert all(getattr(args, f.name) is None for f in dataclasses.fields(C.TrainConfig))
    assert C.dataclass_from_args(C.TrainConfig, args) == C.TrainConfig()


def test_help_shows_each_default_once():
    p = _parser(C.PrepareConfig)
    helps = {a.dest: a.help for a in p._actions}
    assert helps["margin"].endswith("(default: 0.25)") and helps["input_size"].endswith("(default: 224)")
    assert helps["box"].endswith("(default: landmarks)") and helps["box"].count("default") == 1
    assert helps["root"].count("default") == 1                 # its text names the default itself
    assert helps["out_dir"].count("default") == 1
    assert "(default: None)" not in " ".join(h or "" for h in helps.values())
    assert "--input-size" in p.format_help() and "--out-dir" in p.format_help()
    helps = {a.dest: a.help for a in _parser()._actions}
    # texts that name their default themselves get no second one
    assert helps["loss_preset"].count("default") == 1 and "(default: code)" not in helps["loss_preset"]
    assert "(default: 0.2)" not in helps["teacher_stochastic_depth"]
    assert helps["epochs"].endswith("(default: 150)")


@dataclass
class _Required:
    name: str
    size: int = 4


def test_a_field_without_default_shows_none():
    helps = {a.dest: a.help for a in _parser(_Required)._actions}
    assert helps["name"] == "" and helps["size"] == "(default: 4)"


@dataclass
class _Extra:
    ratio: Optional[float] = None
    count: Optional[int] = None
    share: float = 0.5
    undocumented_knob: int = 3
    flag: bool = True


def test_any_config_dataclass_round_trips_through_its_options(monkeypatch):
    monkeypatch.setitem(C.FIELD_HELP, "share", "a 50% share")                # argparse needs %%
    p = _parser(_Extra)
    assert "--share SHARE a 50% share (default: 0.5)" in " ".join(p.format_help().split())
    helps = {a.dest: a.help for a in p._actions}
    assert helps["undocumented_knob"] == "(default: 3)" and helps["ratio"] == ""
    args = p.parse_args(["--ratio", "0.25", "--count", "4", "--undocumented-knob", "7", "--no-flag"])
    assert (args.ratio, type(args.ratio)) == (0.25, float)
    assert (args.count, type(args.count)) == (4, int)
    assert C.dataclass_from_args(_Extra, args) == _Extra(ratio=0.25, count=4, undocumented_knob=7, flag=False)
    assert C.dataclass_from_args(_Extra, p.parse_args(["--flag"])).flag is True


def test_skip_and_choices():
    p = _parser(skip=("dataset", "root"), choices={"student_mode": ("kd", "l2")})
    dests = {a.dest for a in p._actions}
    assert "dataset" not in dests and "root" not in dests and "prepared_dir" in dests
    meta = {a.dest: a.metavar for a in p._actions}
    assert meta["student_mode"] == "{kd,l2}" and meta["augment"] == "{offline,online,none}"
    assert meta["batch_size"] is None


def test_preset_then_command_line():
    args = _parser().parse_args(["--epochs", "2", "--seed", "5"])
    base = C.preset_settings("quick", "student")
    cfg = C.dataclass_from_args(C.TrainConfig, args, base)
    assert (cfg.epochs, cfg.seed, cfg.input_size, cfg.batch_size) == (2, 5, 64, 32)
    assert cfg.freeze_batchnorm_epochs == 3 and cfg.learning_rate == C.TrainConfig().learning_rate
    assert C.dataclass_from_args(C.TrainConfig, argparse.Namespace(), None) == C.TrainConfig()
    assert base == C.preset_settings("quick", "student")                  # the preset is not changed
    with pytest.raises(ConfigError) as err:
        C.dataclass_from_args(C.TrainConfig, args, {"epochs": 1, "speed": 2, "colour": 1})
    assert str(err.value) == "unknown configuration keys ['colour', 'speed'] for TrainConfig"
