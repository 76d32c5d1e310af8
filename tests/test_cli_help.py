"""Every command-line option of the trainers, prepare, test.py, export.py, demo.py, synthetic_faces.py
and asm_soft_landmarks.py explains itself: a one-line description in --help (not only its default),
and the options with a fixed set of values list them (issue 13 item 2)."""
from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

import configuration as C


def _captured(main, argv):
    """The parser main(argv) builds (stopped at parse_args), and its subcommands' parsers by name."""
    captured, sub_parsers = [], {}
    orig = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        captured.append(self)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                sub_parsers.update(action.choices)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(SystemExit):
            main(argv)
    finally:
        argparse.ArgumentParser.parse_args = orig
    return captured[0], sub_parsers


def _parsers():
    import asm_soft_landmarks
    import cnn_model
    import data_util
    import demo
    import export
    import student_trainer
    import synthetic_faces
    import teacher_trainer
    import test as test_cli
    import training

    out = {"teacher_trainer": training.build_parser("t"), "student_trainer": training.build_parser("s"),
           "test.py": test_cli.build_parser(), "export.py": export.build_parser(),
           "demo.py": demo.build_parser(), "synthetic_faces.py": synthetic_faces.build_parser(),
           "asm_soft_landmarks.py": asm_soft_landmarks.build_parser()}
    # the trainers' own options (--teacher, --tough, --tolerant), as their --help prints them
    out["teacher_trainer main"] = _captured(teacher_trainer.main, [])[0]
    out["student_trainer main"] = _captured(student_trainer.main, [])[0]
    out["cnn_model.py"] = _captured(cnn_model.main, [])[0]
    prep = argparse.ArgumentParser()
    C.add_dataclass_args(prep, C.PrepareConfig)
    out["prepare"] = prep
    # data_util's own subcommands, as `python data_util.py prepare|augment --help` prints them
    out.update({f"data_util {k}": v for k, v in _captured(data_util.main, ["prepare"])[1].items()})
    return out


def _undescribed(parser: argparse.ArgumentParser) -> list:
    bad = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        text = re.sub(r"\(default:[^)]*\)", "", action.help or "").strip()
        if len(text) < 8:
            bad.append("/".join(action.option_strings) or action.dest)
    return bad


def test_every_option_has_a_description():
    parsers = _parsers()
    assert {"data_util prepare", "data_util augment", "synthetic_faces.py", "asm_soft_landmarks.py",
            "teacher_trainer main", "student_trainer main"} <= set(parsers)
    missing = {name: _undescribed(p) for name, p in parsers.items()}
    assert not any(missing.values()), {k: v for k, v in missing.items() if v}


def test_every_choice_option_lists_its_values():
    """argparse prints {a,b} unless a metavar hides it; then the help text must name every value."""
    hidden = {}
    for name, p in _parsers().items():
        for action in p._actions:
            if action.choices is None or isinstance(action, argparse._SubParsersAction):
                continue
            if action.metavar is not None and not all(str(c) in (action.help or "") for c in action.choices):
                hidden.setdefault(name, []).append("/".join(action.option_strings) or action.dest)
    assert not hidden, hidden


def test_every_config_field_is_described():
    fields = {f.name for cls in (C.PrepareConfig, C.TrainConfig) for f in dataclasses.fields(cls)}
    assert not fields - set(C.FIELD_HELP), sorted(fields - set(C.FIELD_HELP))


def test_student_help_lists_choices(capsys):
    import student_trainer

    with pytest.raises(SystemExit):
        student_trainer.main(["--help"])
    text = capsys.readouterr().out
    assert "{kd,l2,l1,wing,tough-only,tolerant-only}" in text
    assert "{offline,online,none}" in text
    assert "{default,mirrored,multiworker}" in text
    assert "{" + ",".join(C.LOSS_PRESETS) + "}" in text
    assert "--preset {" in text


def test_choice_metavars_match_validation():
    """The listed values are exactly the ones TrainConfig.validate accepts."""
    for field, values in C.FIELD_CHOICES.items():
        if field == "box":
            continue   # PrepareConfig: checked by prepare
        for v in values:
            C.TrainConfig(**{field: v}).validate()
        with pytest.raises(Exception):
            C.TrainConfig(**{field: "not-a-choice"}).validate()
