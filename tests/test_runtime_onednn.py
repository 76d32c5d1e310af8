"""runtime.quiet_tensorflow keeps oneDNN on (faster training on CPU, bench/speed/
onednn_and_settings.md) and still gives a silent start-up: the notice TensorFlow writes to file
descriptor 2 while it is imported is hidden, nothing else is."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from runtime import quiet_tensorflow
quiet_tensorflow()
import os
import tensorflow as tf
print(os.environ["TF_ENABLE_ONEDNN_OPTS"], int(tf.constant(2) + 1))
print("after import", file=sys.stderr)
"""


def test_onednn_on_by_default_and_start_up_stays_silent():
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", "ABSL_MIN_LOG_LEVEL")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT))], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "3"]
    assert proc.stderr == "after import\n"      # no oneDNN notice, later stderr untouched
