"""demo.py without training: the step sequence it runs, and the table over seeds (hand-computed)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import demo
from errors import ConfigError


def _write_scores(folder, name, nmes):
    (folder / name).mkdir(parents=True)
    scores = {sub: {"nme_interocular": v} for sub, v in nmes.items()}
    (folder / name / "scores.json").write_text(json.dumps({"scores": scores}))


def _three_seeds(tmp_path):
    """Three seed folders: KD 10, 12, 14 and L2 12, 12, 15 (full-set NME)."""
    outs = []
    for seed, (kd, l2) in enumerate([(10.0, 12.0), (12.0, 12.0), (14.0, 15.0)]):
        out = tmp_path / f"demo-300w-seed{seed}"
        _write_scores(out, "student-kd", {"full": kd})
        _write_scores(out, "student-l2", {"full": l2})
        outs.append(out)
    return outs


def test_summarize_seeds_mean_sample_std_and_range(tmp_path):
    outs = _three_seeds(tmp_path)
    text = demo.summarize_seeds(outs, "300w", tmp_path / "seeds")
    summary = json.loads((tmp_path / "seeds" / "summary.json").read_text())
    assert summary["student-kd"]["full"]["mean"] == pytest.approx(12.0)
    assert summary["student-kd"]["full"]["std"] == pytest.approx(2.0)          # sample std, ddof=1
    assert summary["student-l2"]["full"]["std"] == pytest.approx(np.sqrt(3.0))  # values 12, 12, 15
    assert "| student-kd | 3 | 12.00 ± 2.00 [10.00-14.00] |" in text
    assert (tmp_path / "seeds" / "results.md").read_text() == text


def test_summarize_seeds_without_scores_is_one_line_error(tmp_path):
    with pytest.raises(Exception, match="no scores.json"):
        demo.summarize_seeds([tmp_path], "300w", tmp_path / "seeds")


def test_seeds_reject_models_dir(tmp_path):
    with pytest.raises(ConfigError, match="--models-dir"):
        demo.main(["--seeds", "0", "1", "--models-dir", str(tmp_path)])


def test_seeds_with_out_run_each_seed_in_its_own_folder(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(demo, "run_one", lambda args: seen.append((args.seed, args.out)) or 0)
    monkeypatch.setattr(demo, "summarize_seeds", lambda outs, ds, folder: seen.append(("summary", str(folder))) or "")
    assert demo.main(["--seeds", "2", "5", "2", "--out", str(tmp_path)]) == 0
    assert seen == [(2, str(tmp_path / "seed2")), (5, str(tmp_path / "seed5")), ("summary", str(tmp_path / "seeds"))]


def test_step_sequence_and_seed(tmp_path, monkeypatch):
    """By default the students distil from the shipped teachers: prepare, the students, then test.py
    on each; the seed and the quick settings (cosine schedule included) reach each trainer."""
    calls = []
    monkeypatch.setattr(demo, "_run", lambda step, cmd, log, *a: calls.append(cmd) or 0.0)
    monkeypatch.setattr(demo, "write_report", lambda *a, **k: "report")
    assert demo.main(["--seed", "3", "--ablations", "--jobs", "1", "--out", str(tmp_path)]) == 0
    scripts = [c[0] for c in calls]
    assert scripts == ["data_util.py"] + ["student_trainer.py"] * 5 + ["test.py"] * 7
    modes = [c[c.index("--student-mode") + 1] for c in calls if c[0] == "student_trainer.py"]
    assert modes == ["kd", "l1", "l2", "tough-only", "tolerant-only"]
    tested = [c[c.index("--mode") + 1] for c in calls if c[0] == "test.py"]
    assert tested == ["kd", "l1", "l2", "tough-only", "tolerant-only", "teacher", "teacher"]
    tough, tolerant = demo.shipped_teachers("300w")
    for c in calls[1:6]:
        assert c[c.index("--loss-preset") + 1] == "code"
        assert c[c.index("--seed") + 1] == "3"
        assert c[c.index("--input-size") + 1] == str(demo.QUICK["input_size"])
        assert c[c.index("--epochs") + 1] == str(demo.QUICK["student_epochs"])
        assert c[c.index("--lr-schedule") + 1] == demo.QUICK["lr_schedule"]
        assert c[c.index("--freeze-batchnorm-epochs") + 1] == str(demo.QUICK["student_freeze_batchnorm_epochs"])
        assert c[c.index("--tough") + 1] == str(tough) and c[c.index("--tolerant") + 1] == str(tolerant)
    assert json.loads((tmp_path / "timings.json").read_text())["seed"] == 3


def test_students_picks_which_students_train_and_are_evaluated(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(demo, "_run", lambda step, cmd, log, *a: calls.append(cmd) or 0.0)
    monkeypatch.setattr(demo, "write_report", lambda *a, **k: "report")
    assert demo.main(["--students", "tolerant-only", "tough-only", "tolerant-only", "--jobs", "1", "--out", str(tmp_path)]) == 0
    modes = [c[c.index("--student-mode") + 1] for c in calls if c[0] == "student_trainer.py"]
    assert modes == ["tolerant-only", "tough-only"]
    tested = [c[c.index("--mode") + 1] for c in calls if c[0] == "test.py"]
    assert tested == ["tolerant-only", "tough-only", "teacher", "teacher"]
    with pytest.raises(SystemExit):
        demo.build_parser().parse_args(["--students", "kd", "teacher"])


def test_train_teachers_adds_the_asm_and_both_teachers(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(demo, "_run", lambda step, cmd, log, *a: calls.append(cmd) or 0.0)
    monkeypatch.setattr(demo, "write_report", lambda *a, **k: "report")
    assert demo.main(["--train-teachers", "--jobs", "1", "--out", str(tmp_path)]) == 0
    scripts = [c[0] for c in calls]
    assert scripts == ["data_util.py", "asm_soft_landmarks.py", "teacher_trainer.py", "teacher_trainer.py",
                       "student_trainer.py", "student_trainer.py", "student_trainer.py"] + ["test.py"] * 5
    trained = [c[c.index("--output") + 1] for c in calls if c[0] == "teacher_trainer.py"]
    kd = next(c for c in calls if c[0] == "student_trainer.py")
    assert kd[kd.index("--tough") + 1] == trained[0] and kd[kd.index("--tolerant") + 1] == trained[1]
    assert str(tmp_path) in trained[0]            # not the shipped models/teachers
    assert all("--freeze-batchnorm-epochs" not in c for c in calls if c[0] == "teacher_trainer.py")
    calls.clear()
    assert demo.main(["--student-epochs", "2", "--jobs", "1", "--out", str(tmp_path / "short")]) == 0
    assert [c[c.index("--freeze-batchnorm-epochs") + 1] for c in calls if c[0] == "student_trainer.py"] == ["0"] * 3


def test_missing_shipped_teachers_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "MODELS_DIR", tmp_path / "none")
    with pytest.raises(ConfigError, match="--train-teachers"):
        demo.main(["--out", str(tmp_path / "out")])


def test_paired_difference_and_its_confidence_interval_by_hand(tmp_path):
    # KD - L2 per seed: -2, 0, -1 -> mean -1, sd 1, t(0.975, 2) = 4.302653 -> half width 2.484138
    diff = demo.paired_difference([10.0, 12.0, 14.0], [12.0, 12.0, 15.0])
    assert diff["mean"] == pytest.approx(-1.0) and diff["std"] == pytest.approx(1.0)
    assert diff["ci95"][0] == pytest.approx(-1.0 - 2.484138, abs=1e-5)
    assert diff["ci95"][1] == pytest.approx(-1.0 + 2.484138, abs=1e-5)
    assert "not distinguishable" in demo.verdict("student-kd", "student-l2", diff)
    clear = demo.paired_difference([10.0, 11.0, 10.5, 10.2], [12.0, 12.9, 12.6, 12.1])
    assert clear["ci95"][1] < 0 and "beats" in demo.verdict("student-kd", "student-l2", clear)
    outs = _three_seeds(tmp_path)
    text = demo.summarize_seeds(outs, "300w", tmp_path / "seeds")
    assert "| student-kd - student-l2 | 3 | -1.00 | 1.00 | -3.48 to +1.48 | -2.00, +0.00, -1.00 |" in text


def test_steps_get_the_allocator_settings_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    for k in demo.MALLOC_ENV:
        monkeypatch.delenv(k, raising=False)
    assert all(demo.step_env()[k] == v for k, v in demo.MALLOC_ENV.items())
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    env = demo.step_env()
    assert env["MALLOC_ARENA_MAX"] == "2" and not any(k in env for k in demo.MALLOC_ENV)


def test_loss_preset_names_the_students_that_use_it(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(demo, "_run", lambda step, cmd, log, *a: calls.append(cmd) or 0.0)
    monkeypatch.setattr(demo, "write_report", lambda *a, **k: "report")
    assert demo.main(["--students", "kd", "l1", "--loss-preset", "paper", "--jobs", "1", "--out", str(tmp_path)]) == 0
    trained = [c for c in calls if c[0] == "student_trainer.py"]
    assert [c[c.index("--loss-preset") + 1] for c in trained] == ["paper", "paper"]
    assert [c[c.index("--run-dir") + 1] for c in trained] == [str(tmp_path / "runs" / "student-kd-paper"),
                                                              str(tmp_path / "runs" / "student-l1")]
    tested = [(c[c.index("--out-dir") + 1], c[c.index("--mode") + 1]) for c in calls if c[0] == "test.py"]
    assert tested[:2] == [(str(tmp_path / "student-kd-paper"), "kd"), (str(tmp_path / "student-l1"), "l1")]


def test_seed_table_compares_every_student_with_l1_and_with_l2(tmp_path):
    """KD 10, 12, 14; L1 11, 12, 16; L2 12, 12, 15: KD - L1 per seed -1, 0, -2 (mean -1, sd 1)."""
    outs = _three_seeds(tmp_path)
    for out, l1 in zip(outs, (11.0, 12.0, 16.0)):
        _write_scores(out, "student-l1", {"full": l1})
    text = demo.summarize_seeds(outs, "300w", tmp_path / "seeds")
    summary = json.loads((tmp_path / "seeds" / "summary.json").read_text())
    assert summary["paired_vs_l1"]["student-kd"]["values"] == pytest.approx([-1.0, 0.0, -2.0])
    assert summary["paired_vs_l2"]["student-l1"]["values"] == pytest.approx([-1.0, 0.0, 1.0])
    assert "student-l1" not in summary["paired_vs_l1"]
    assert "| student-kd - student-l1 | 3 | -1.00 | 1.00 | -3.48 to +1.48 | -1.00, +0.00, -2.00 |" in text
    assert "against student-l1 (what the teachers add" in text


def test_report_states_what_the_teachers_add():
    full = {"student-kd": 7.5, "student-l1": 7.75, "student-l2": 11.5, "teacher-tough": 4.8}
    text = "\n".join(demo.comparison_lines(full, {"full": {"nme_interocular": 20.0}}))
    assert "KD - L1 (what the teachers add): -0.25 points" in text
    assert "KD - L2 (the paper's comparison): -4.00 points" in text
    assert "KD student / mean shape (full set): 0.38x." in text
    assert demo.comparison_lines({"student-l2": 11.5}) == []


def test_two_jobs_run_steps_side_by_side_on_one_thread_each(tmp_path, monkeypatch):
    """--jobs 2: every student and evaluation runs, two at a time, each step's output in its own log
    file and TensorFlow on one thread; a failing step stops the demo with a line naming its log."""
    import threading

    for key in demo.ONE_THREAD:
        monkeypatch.delenv(key, raising=False)
    seen, lock, active, peak = [], threading.Lock(), [0], [0]

    def fake_run(cmd, cwd=None, env=None, stdout=None, stderr=None):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            seen.append((cmd[1], env.get("TF_NUM_INTRAOP_THREADS"), stdout is not None))
        import time
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(demo.subprocess, "run", fake_run)
    monkeypatch.setattr(demo, "write_report", lambda *a, **k: "report")
    assert demo.main(["--jobs", "2", "--out", str(tmp_path)]) == 0
    scripts = sorted(s for s, _, _ in seen)
    assert scripts == ["data_util.py"] + ["student_trainer.py"] * 3 + ["test.py"] * 5
    assert all(t == "1" and logged for s, t, logged in seen if s != "data_util.py")
    assert peak[0] == 2
    assert (tmp_path / "logs").is_dir()

    def failing(cmd, cwd=None, env=None, stdout=None, stderr=None):
        return type("Failed", (), {"returncode": 3 if cmd[1] == "student_trainer.py" else 0})()

    monkeypatch.setattr(demo.subprocess, "run", failing)
    with pytest.raises(Exception, match=r"failed \(exit 3\); see .*logs"):
        demo.main(["--jobs", "2", "--out", str(tmp_path / "again")])
