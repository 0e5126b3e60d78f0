#!/bin/sh
# Every benchmark in its --quick mode: that the scripts still run against
# the code, not what they measure (CI runs this; the figures it prints on a
# busy machine mean little). PYTHON defaults to the checkout's venv.
set -e
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
for script in bench_schedule bench_core bench_ops bench_size bench_memory \
              bench_latency bench_workers bench_zeo_cost bench_scaling \
              bench_enqueue; do
    echo "== bench/$script.py --quick"
    "$PYTHON" "bench/$script.py" --quick
done
