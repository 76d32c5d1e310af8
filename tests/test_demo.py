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


def test_summarize_seeds_mean_sample_std_and_range(tmp_path):
    outs = []
    for seed, (kd, l2) in enumerate([(10.0, 12.0), (12.0, 12.0), (14.0, 15.0)]):
        out = tmp_path / f"demo-300w-seed{seed}"
        _write_scores(out, "student-kd", {"full": kd})
        _write_scores(out, "student-l2", {"full": l2})
        outs.append(out)
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


def test_seeds_rejects_out(tmp_path):
    with pytest.raises(ConfigError, match="--seeds"):
        demo.main(["--seeds", "0", "1", "--out", str(tmp_path)])


def test_step_sequence_and_seed(tmp_path, monkeypatch):
    """Every step is a repo command; the seed and the quick settings reach each trainer."""
    calls = []
    monkeypatch.setattr(demo, "_run", lambda step, cmd, log: calls.append(cmd) or 0.0)
    monkeypatch.setattr(demo, "write_report", lambda *a, **k: "report")
    assert demo.main(["--seed", "3", "--ablations", "--out", str(tmp_path)]) == 0
    scripts = [c[0] for c in calls]
    assert scripts[:4] == ["data_util.py", "asm_soft_landmarks.py", "teacher_trainer.py", "teacher_trainer.py"]
    assert scripts[4:8] == ["student_trainer.py"] * 4 and scripts[8:] == ["test.py"] * 6
    modes = [c[c.index("--student-mode") + 1] for c in calls if c[0] == "student_trainer.py"]
    assert modes == ["kd", "l2", "tough-only", "tolerant-only"]
    for c in calls[2:8]:
        assert c[c.index("--seed") + 1] == "3"
        assert c[c.index("--input-size") + 1] == str(demo.QUICK["input_size"])
    assert json.loads((tmp_path / "timings.json").read_text())["seed"] == 3


def test_steps_get_the_allocator_settings_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    for k in demo.MALLOC_ENV:
        monkeypatch.delenv(k, raising=False)
    assert all(demo.step_env()[k] == v for k, v in demo.MALLOC_ENV.items())
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    env = demo.step_env()
    assert env["MALLOC_ARENA_MAX"] == "2" and not any(k in env for k in demo.MALLOC_ENV)
