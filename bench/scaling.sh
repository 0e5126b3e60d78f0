#!/bin/sh
# The real ZEO drains with 1, 2, 4 and 8 worker processes, each next to what
# the model predicts from the 1-worker drain (bench/bench_scaling.py), for a
# machine with the cores to show scaling. From the repository root:
#
#     bench/scaling.sh                     # 1,2,4,8 workers, 20,000 jobs, 3 runs
#     WORKERS=1,2,4,8,16 RUNS=1 bench/scaling.sh --json /tmp/scaling.json
#
# PYTHON (default .venv/bin/python), WORKERS, JOBS and RUNS override the
# defaults; other arguments go to bench_scaling.py.
set -e
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
echo "$(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec "$PYTHON" bench/bench_scaling.py --workers "${WORKERS:-1,2,4,8}" \
    --jobs "${JOBS:-20000}" --runs "${RUNS:-3}" "$@"
