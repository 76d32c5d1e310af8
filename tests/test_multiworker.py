"""`--strategy multiworker` on this machine: two workers on localhost ports (TF_CONFIG, CPU) train the
Tough teacher together.

What must hold (issue 13 item 7):
* the run finishes on both workers, with 2 replicas in sync;
* the chief alone writes the run folder's checkpoints (last.keras, best.keras, state.json), its logs
  and the final model; the other worker keeps only its own resume copy in <run>/.worker-1/ and
  exports nothing;
* the result matches a single-worker run with the same global batch (4 faces: 2 per worker): every
  weight within 1e-5 and the validation NME of each epoch within 1e-6 (measured: max |weight
  difference| 1.9e-8, NMEs equal to 1e-9; the only difference is the order of the gradient sums).

The network is test_trainers' tiny CNN on 16 dot-pattern faces at 32 px, 2 epochs of 3 steps.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

WORKER = """
import sys
from test_trainers import tiny_builder
import teacher_trainer
out = sys.argv[1]
strategy = sys.argv[2]
raise SystemExit(teacher_trainer.main([
    "--prepared-dir", {prepared!r}, "--input-size", "32", "--batch-size", "4", "--epochs", "2",
    "--augment", "none", "--strategy", strategy, "--learning-rate", "0.003", "--lr-decay", "0",
    "--val-fraction", "0.25", "--bn-recalibration", "0", "--seed", "3",
    "--run-dir", out + "/run", "--output", out + "/teacher.keras", "--verbose", "2"],
    builder=tiny_builder))
"""


def _free_ports(n: int) -> list:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _env(tf_config=None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _weights(path: Path) -> list:
    import keras

    return keras.models.load_model(path, compile=False).get_weights()


def _val_nmes(run: Path) -> list:
    with open(run / "log.csv", newline="") as f:
        return [float(r["val_nme"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from test_trainers import make_prepared

    root = tmp_path_factory.mktemp("multiworker")
    prepared = make_prepared(root, n_train=16, n_test=3)
    script = root / "worker.py"
    script.write_text(textwrap.dedent(WORKER.format(prepared=str(prepared))))
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = [subprocess.Popen([sys.executable, str(script), str(root / "multi"), "multiworker"],
                              cwd=ROOT, env=_env({"cluster": cluster,
                                                  "task": {"type": "worker", "index": i}}),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            outs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    single = subprocess.run([sys.executable, str(script), str(root / "single"), "default"], cwd=ROOT,
                            env=_env(), capture_output=True, text=True, timeout=300)
    return {"root": root, "workers": outs, "single": single}


def test_two_workers_finish_with_two_replicas(runs):
    for rc, out, err in runs["workers"]:
        assert rc == 0, out[-2000:] + err[-3000:]
        assert "CollectiveAllReduceStrategy: 2 replicas" in out
        assert "epoch 2/2" in out


def test_chief_alone_writes_the_run_and_the_model(runs):
    multi = runs["root"] / "multi"
    run = multi / "run"
    chief_out, worker_out = runs["workers"][0][1], runs["workers"][1][1]
    assert f"model -> {multi / 'teacher.keras'}" in chief_out
    assert "model -> None" in worker_out                  # the other worker exports nothing
    assert (multi / "teacher.keras").is_file()
    for name in ("last.keras", "best.keras", "state.json", "log.csv", "config.json"):
        assert (run / name).is_file(), name
    # the worker's own resume copy stays in its private folder, never beside the chief's files
    private = run / ".worker-1"
    assert (private / "last.keras").is_file()
    assert sorted(p.name for p in run.glob("*.keras")) == ["best.keras", "last.keras"]
    assert not list(private.glob("teacher*.keras"))
    assert json.loads((run / "state.json").read_text())["epoch"] == 2


def test_result_matches_single_worker_with_the_same_global_batch(runs):
    single = runs["single"]
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-3000:]
    root = runs["root"]
    multi_w = _weights(root / "multi" / "teacher.keras")
    single_w = _weights(root / "single" / "teacher.keras")
    worker_w = _weights(root / "multi" / "run" / ".worker-1" / "last.keras")
    assert len(multi_w) == len(single_w)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(multi_w, single_w))
    assert diff < 1e-5, diff
    # both workers hold the same model
    assert max(float(np.abs(a - b).max()) for a, b in zip(multi_w, worker_w)) < 1e-6
    nmes_multi = _val_nmes(root / "multi" / "run")
    nmes_single = _val_nmes(root / "single" / "run")
    assert len(nmes_multi) == len(nmes_single) == 2
    assert np.allclose(nmes_multi, nmes_single, rtol=0, atol=1e-6), (nmes_multi, nmes_single)
    assert nmes_multi[1] < nmes_multi[0]     # it trained: a run that did nothing would also match
