#!/usr/bin/env python
"""Draw the benchmark plots of docs/benchmarks.rst from saved results.

    .venv/bin/python bench/bench_core.py --json core.json
    .venv/bin/python bench/bench_workers.py --json workers.json
    .venv/bin/python bench/plot.py core.json workers.json docs/

Needs matplotlib (``pip install -e '.[bench]'``). Writes
``benchmarks-per-call.png`` (per-call cost against the number of jobs,
zodbtasks and the reference package) and ``benchmarks-throughput.png`` (jobs
per second against the number of worker processes on ZEO, with the
FileStorage and huey rates as lines) into the given folder.
"""
import json
import os
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

OPERATIONS = [
    ('add', 'add'),
    ('cancel', 'cancel'),
    ('pn_queued', 'processNext, N queued'),
    ('pn_cron', 'processNext, N cron waiting'),
    ('pn_due', 'processNext, cron job due'),
]


def perCall(core, out):
    fig, ax = plt.subplots(figsize=(8, 5))
    for (key, label), color in zip(OPERATIONS, plt.cm.tab10.colors):
        for impl, style in (('zodbtasks', '-o'), ('reference', '--x')):
            cells = (core.get(impl) or {}).get('results', {}).get(key, {})
            points = sorted((int(n), cell['median_us'])
                            for n, cell in cells.items()
                            if cell and int(n) > 0)
            if points:
                ax.plot([n for n, _ in points], [us for _, us in points],
                        style, color=color,
                        label='%s (%s)' % (label, impl))
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('jobs in the service')
    ax.set_ylabel('median microseconds per call')
    ax.set_title('Per-call cost against the number of jobs (in memory)')
    ax.axhline(50, color='grey', linewidth=0.8, linestyle=':')
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which='both', linewidth=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, 'benchmarks-per-call.png'), dpi=100)


def throughput(workers, out):
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    measures = [('rate', 'enqueue to completed'),
                ('drain', 'draining a backlog')]
    for ax, (key, title) in zip(axes, measures):
        rows = [row for row in workers['rows'] if row.get(key)]
        zeo = sorted((int(row['scenario'].split()[1]), row[key])
                     for row in rows if row['scenario'].startswith('ZEO'))
        ax.plot([n for n, _ in zeo], [r for _, r in zeo], '-o',
                label='zodbtasks, ZEO, N worker processes')
        for row, style in zip([r for r in rows
                               if not r['scenario'].startswith('ZEO')],
                              [':', '--', '-.', ':']):
            ax.axhline(row[key], linestyle=style, color='grey')
            ax.text(1, row[key] * 1.03, row['scenario'], fontsize=7)
        ax.set_yscale('log')
        ax.set_xticks([n for n, _ in zeo])
        ax.set_xlabel('worker processes')
        ax.set_title(title, fontsize=10)
        ax.grid(True, which='both', linewidth=0.3)
    axes[0].set_ylabel('jobs per second')
    axes[0].legend(fontsize=8)
    fig.suptitle('Throughput of %d no-op jobs on %d CPUs'
                 % (workers['jobs'], workers['cpus']))
    fig.tight_layout()
    fig.savefig(os.path.join(out, 'benchmarks-throughput.png'), dpi=100)


def main(argv):
    """plot.py CORE.json WORKERS.json OUTDIR; either JSON may be '-' to
    leave its plot as it is."""
    if len(argv) != 3:
        sys.exit(__doc__)
    if argv[0] != '-':
        with open(argv[0]) as f:
            perCall(json.load(f), argv[2])
    if argv[1] != '-':
        with open(argv[1]) as f:
            throughput(json.load(f), argv[2])


if __name__ == '__main__':
    main(sys.argv[1:])
