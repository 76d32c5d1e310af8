#!/usr/bin/env bash
# Run the three CPU benchmarks at full size, one after the other (about 15-20 minutes on 2 quiet
# cores); tables go to bench/speed/*.md. Check `uptime` first: run on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
for script in inference_speed training_speed compute_efficiency; do
  echo "== $script ($(date -u +%H:%M:%S) UTC, load: $(cut -d' ' -f1-3 /proc/loadavg))"
  python "bench/speed/$script.py"
done
