"""The figures of the overview, from the counts and the latest finished jobs.

Counts come from ``jobCounts`` (the same cost at any number of jobs). What
the counts cannot tell (when jobs finished, how long they ran) comes from
the newest finished jobs, read page by page with ``listJobs`` and never
more than a bound, so that the overview costs the same at a million jobs.
"""
import math

from zodbtasks import interfaces

#: Finished jobs of each outcome (completed, error) the overview reads.
RECENT_LIMIT = 1000
MINUTES = 60


def recent_finished(service, limit=RECENT_LIMIT):
    """(completed jobs, failed jobs, cut): the newest finished jobs of each
    outcome, at most ``limit`` each, and whether the limit left some out."""
    found = {}
    cut = False
    for status in (interfaces.COMPLETED, interfaces.ERROR):
        jobs, cursor = service.listJobs(status=status, limit=limit)
        found[status] = jobs
        cut = cut or cursor is not None
    return found[interfaces.COMPLETED], found[interfaces.ERROR], cut


def throughput(completed, failed, now, minutes=MINUTES):
    """Finished runs per minute over the last ``minutes`` minutes: a list
    of (completed, failed), the oldest minute first, the current last."""
    buckets = [[0, 0] for _ in range(minutes)]
    for which, jobs in ((0, completed), (1, failed)):
        for job in jobs:
            when = job.completed
            if when is None or when > now:
                continue
            age = int((now - when) // 60)
            if age < minutes:
                buckets[minutes - 1 - age][which] += 1
    return [tuple(b) for b in buckets]


def percentile(values, p):
    """The ``p``-th percentile (nearest rank) of sorted ``values``."""
    if not values:
        return None
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[rank - 1]


def run_duration(job):
    """How long the latest run of a finished job took, or None."""
    if job.started is None or job.completed is None \
            or job.completed < job.started:
        return None
    return job.completed - job.started


def durations_by_task(jobs):
    """{task: sorted durations of the latest runs of ``jobs``}."""
    found = {}
    for job in jobs:
        seconds = run_duration(job)
        if seconds is not None:
            found.setdefault(job.task, []).append(seconds)
    for values in found.values():
        values.sort()
    return found


class TaskTimes:
    """How long the runs of one task took."""

    def __init__(self, task, durations):
        self.task = task
        self.runs = len(durations)
        self.p50 = percentile(durations, 50)
        self.p95 = percentile(durations, 95)
        self.longest = durations[-1]


def slowest_tasks(jobs, count=10):
    """The ``count`` tasks whose runs took longest (by p95, then p50)."""
    times = [TaskTimes(task, values)
             for task, values in durations_by_task(jobs).items()]
    times.sort(key=lambda t: (-t.p95, -t.p50, t.task))
    return times[:count]


class TaskFailures:
    """The failures of one task: jobs failed for good, and recently."""

    def __init__(self, task, failed, retrying, lately):
        self.task = task
        self.failed = failed
        self.retrying = retrying
        self.lately = lately


def failures_by_task(counts, failed_jobs, now, within=3600):
    """One `TaskFailures` per task that has failed or retrying jobs, the
    most failed first. ``counts`` is ``jobCounts()``."""
    failed, retrying, lately = {}, {}, {}
    for (status, task), n in counts.items():
        if n and status == interfaces.ERROR:
            failed[task] = failed.get(task, 0) + n
        elif n and status == interfaces.RETRYING:
            retrying[task] = retrying.get(task, 0) + n
    for job in failed_jobs:
        if job.completed is not None and now - within <= job.completed <= now:
            lately[job.task] = lately.get(job.task, 0) + 1
    tasks = set(failed) | set(retrying)
    rows = [TaskFailures(t, failed.get(t, 0), retrying.get(t, 0),
                         lately.get(t, 0)) for t in tasks]
    rows.sort(key=lambda r: (-r.failed, -r.retrying, r.task))
    return rows


class Chart:
    """The geometry of the throughput chart, drawn as SVG by the template.

    ``bars`` are (x, y, width, height, css class, title) of each rectangle;
    the values are rounded so that the markup stays small.
    """

    def __init__(self, buckets, width=720, height=160, left=36, bottom=20,
                 top=8):
        self.width, self.height = width, height
        self.left, self.bottom, self.top = left, bottom, top
        self.total_completed = sum(c for c, f in buckets)
        self.total_failed = sum(f for c, f in buckets)
        self.peak = max([c + f for c, f in buckets] + [0])
        scale = max(self.peak, 1)
        plot = height - bottom - top
        self.base = height - bottom
        step = (width - left) / len(buckets)
        self.bars = []
        for i, (done, failed) in enumerate(buckets):
            x = round(left + i * step + 1, 1)
            w = round(max(step - 2, 1), 1)
            ago = len(buckets) - 1 - i
            label = 'this minute' if ago == 0 else '%d min ago' % ago
            y = self.base
            for n, css, what in ((done, 'bar completed', 'completed'),
                                 (failed, 'bar failed', 'failed')):
                if n:
                    h = round(n / scale * plot, 1)
                    y = round(y - h, 1)
                    self.bars.append((x, y, w, h, css, '%s: %d %s' % (
                        label, n, what)))
        self.ticks = [(round(left + i * step, 1), '-%d min' % (
            len(buckets) - i)) for i in range(0, len(buckets), 15)]
        self.ticks.append((width, 'now'))
