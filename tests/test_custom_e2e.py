"""A user's own dataset end to end, with the commands the docs and the hints print (issue 13 item 1):
prepare -> ASM -> both teachers -> student -> `test.py --custom-spec`.

The data is a real-format custom dataset (tests/fixtures.make_custom: a JSON spec and list files of
5 real annotated points per face, 4 training and 3 test faces, an image name with a space) whose
spec says "aug_copies": 0. Each step is the command-line entry point called in this process (TF
loads once); the trainers get the tiny CNN through their `builder` hook and 32 px crops, so the
whole chain takes well under a minute. Every output goes under tmp_path (never models/ or data/).
"""
from __future__ import annotations

import json
import re
import shlex

import pytest

import configuration as C
from errors import ModelError


def _tiny(num_points, input_size):
    from test_trainers import tiny_builder

    return tiny_builder(num_points, input_size)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    import asm_soft_landmarks
    import data_util
    import student_trainer
    import teacher_trainer
    import test as test_cli
    from fixtures import make_custom

    tmp = tmp_path_factory.mktemp("custom_e2e")
    spec = make_custom(tmp / "mydata")
    spec_obj = json.loads(spec.read_text())
    spec_obj["aug_copies"] = 0                      # no offline copies: must not ask for --copies
    spec.write_text(json.dumps(spec_obj))
    prepared = tmp / "prepared"
    common = ["--custom-spec", str(spec), "--input-size", "32"]
    tiny = ["--batch-size", "2", "--epochs", "2", "--val-fraction", "0.25", "--bn-recalibration", "0",
            "--learning-rate", "0.003", "--verbose", "0"]

    assert data_util.main(["prepare", *common, "--out-dir", str(prepared), "--no-progress"]) == 0
    assert asm_soft_landmarks.main([*common, "--prepared-dir", str(prepared)]) == 0

    # The student first, with no teachers: its error prints the command that trains each one.
    student_args = [*common, "--prepared-dir", str(prepared), *tiny, "--run-dir", str(tmp / "run-s"),
                    "--output", str(tmp / "student.keras")]
    hints = {}
    teachers = {}
    for kind in ("tough", "tolerant"):
        with pytest.raises(ModelError) as err:
            student_trainer.main([*student_args, *(f"--{k}={v}" for k, v in teachers.items())],
                                 builder=_tiny)
        hint = re.search(r"`(python teacher_trainer\.py [^`]*)`", str(err.value)).group(1)
        hints[kind] = hint
        argv = shlex.split(hint)[2:]                # run the hint as printed, plus tmp outputs
        out = tmp / f"{kind}.keras"
        assert teacher_trainer.main([*argv, *tiny, "--run-dir", str(tmp / f"run-{kind}"),
                                     "--output", str(out)], builder=_tiny) == 0
        teachers[kind] = out
    assert student_trainer.main([*student_args, "--tough", str(teachers["tough"]),
                                 "--tolerant", str(teachers["tolerant"])], builder=_tiny) == 0

    results = tmp / "results"
    assert test_cli.main([*common[:2], "--model", str(tmp / "student.keras"),
                          "--prepared-dir", str(prepared), "--out-dir", str(results)]) == 0
    by_folder = tmp / "results-by-folder"
    assert test_cli.main(["--model", str(tmp / "student.keras"), "--prepared-dir", str(prepared),
                          "--out-dir", str(by_folder)]) == 0
    return {"spec": spec, "prepared": prepared, "hints": hints, "results": results,
            "by_folder": by_folder}


def test_hints_name_the_custom_spec_and_run_as_printed(chain):
    for kind, hint in chain["hints"].items():
        assert f"--custom-spec {chain['spec']}" in hint and f"--teacher {kind}" in hint
        assert "--dataset" not in hint           # `--dataset five` alone would be unknown


def test_prepared_with_zero_copies_and_named_after_the_dataset(chain):
    manifest = json.loads((chain["prepared"] / "manifest.json").read_text())
    assert manifest["dataset"] == "five" and manifest["counts"] == {"train": 4, "test": 3}
    assert not (chain["prepared"] / "train_aug").exists()
    default = C.PrepareConfig(dataset="five", input_size=32, custom_spec=str(chain["spec"]))
    assert default.resolved_out_dir().name == "five-32"     # not "five-synthetic-32"


@pytest.mark.parametrize("which", ["results", "by_folder"])
def test_results_table_is_the_custom_dataset_alone(chain, which):
    out = chain[which]
    scores = json.loads((out / "scores.json").read_text())
    assert scores["dataset"] == "five"
    assert set(scores["scores"]) == {"full"} and scores["scores"]["full"]["count"] == 3
    assert "fr@0.08" not in scores["scores"]["full"]           # 300W's extra threshold
    assert set(scores["mean_shape_scores"]) == {"full"}
    report = (out / "results.md").read_text()
    assert report.startswith("# Results: student.keras on five (custom dataset)")
    for foreign in ("paper", "published", "METHOD.md", "300w", "300W", "common", "challenging"):
        assert foreign not in report, foreign
    assert "| full | 3 |" in report
    assert (out / "ced.png").is_file() and (out / "samples.png").is_file()


def test_own_model_on_a_photo_with_its_spec(chain, tmp_path):
    """`python test.py --custom-spec SPEC --model M --image PHOTO`: the spec read once in main is what
    the layout's crop factor is measured with (a call to the removed register_custom_dataset here
    was a NameError); the points come back in the layout's count."""
    import test as test_cli

    photo = chain["spec"].parent / "images" / "face 2.ppm"            # takeo.ppm
    student = chain["spec"].parent.parent / "student.keras"
    assert test_cli.main(["--custom-spec", str(chain["spec"]), "--model", str(student), "--image",
                          str(photo), "--box", "35", "70", "80", "95", "--out-dir", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "face 2_landmarks.json").read_text())
    assert [len(face["landmarks_px"]) for face in record["faces"]] == [5]
