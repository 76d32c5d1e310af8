"""bench/studies/learning_curves/learning_curves.py: images seen per epoch from a run folder, first crossings, the plot."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("learning_curves", ROOT / "bench" / "studies" / "learning_curves" / "learning_curves.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_folder(path: Path, nmes, steps=10, batch=8):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"batch_size": batch, "input_size": 64}))
    (path / "state.json").write_text(json.dumps({"steps_per_epoch": steps, "elapsed_s": 120.0}))
    rows = ["epoch,best_val_nme,loss,val_mse,val_nme"] + [f"{e},0,0,0,{v}" for e, v in enumerate(nmes)]
    (path / "log.csv").write_text("\n".join(rows) + "\n")
    return path


def test_images_seen_and_first_crossing(tmp_path):
    lc = _module()
    curve = lc.read_curve(_run_folder(tmp_path / "run", [0.30, 0.18, 0.12, 0.14]))
    assert curve["images"] == [80, 160, 240, 320]             # (epoch + 1) x 10 steps x batch 8
    assert curve["val_nme"] == pytest.approx([30.0, 18.0, 12.0, 14.0])
    assert lc.first_below(curve, 20.0) == 160 and lc.first_below(curve, 12.0) == 240
    assert lc.first_below(curve, 5.0) is None


def test_cli_writes_plot_and_table(tmp_path):
    lc = _module()
    a = _run_folder(tmp_path / "a", [0.3, 0.2])
    b = _run_folder(tmp_path / "b", [0.25, 0.09], steps=5)
    out, table = tmp_path / "curves.png", tmp_path / "curves.md"
    assert lc.main(["--runs", f"{a}=teacher", str(b), "--out", str(out), "--table", str(table),
                    "--thresholds", "20", "10"]) == 0
    assert out.stat().st_size > 1000
    text = table.read_text()
    assert "| teacher | 8 | 2 | 160 | 2 | 20.00% | 160 | - |" in text
    assert "| b | 8 | 2 | 80 | 2 | 9.00% | 80 | 80 |" in text


def test_missing_run_folder_is_one_line_error(tmp_path):
    lc = _module()
    with pytest.raises(Exception, match="not a finished-epoch run folder"):
        lc.read_curve(tmp_path / "nothing")


def test_curves_json_round_trip_combines_with_run_folders(tmp_path):
    lc = _module()
    a = _run_folder(tmp_path / "a", [0.3, 0.2])
    saved = tmp_path / "curves.json"
    assert lc.main(["--runs", f"{a}=teacher", "--out", str(tmp_path / "1.png"), "--json", str(saved)]) == 0
    b = _run_folder(tmp_path / "b", [0.25, 0.09], steps=5)
    table = tmp_path / "both.md"
    assert lc.main(["--runs", str(saved), f"{b}=student", "--out", str(tmp_path / "2.png"),
                    "--table", str(table), "--thresholds", "20", "10"]) == 0
    text = table.read_text()
    assert "| teacher | 8 | 2 | 160 | 2 | 20.00% | 160 | - |" in text      # from the JSON file
    assert "| student | 8 | 2 | 80 | 2 | 9.00% | 80 | 80 |" in text
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"x": {"images": [1]}}))
    with pytest.raises(Exception, match="not a curves file"):
        lc.read_curves_json(bad)
