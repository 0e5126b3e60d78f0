"""A task service's figures in the Prometheus text format.

`MetricsCollector` reads one service in one transaction each time it is
scraped and reports:

* ``zodbtasks_jobs{status, task}``: the jobs kept, from the service's
  counts (runs that ended well or failed for good are the ``completed``
  and ``error`` series; they fall when jobs are cleaned away);
* ``zodbtasks_service_paused``;
* from the records that workers keep in the database (see
  `zodbtasks.registry`; a worker renews its record with its heartbeats,
  so these lag by at most its heartbeat interval):
  ``zodbtasks_workers{state}``, ``zodbtasks_live_workers``,
  ``zodbtasks_worker_runs_total{worker, outcome}`` (the outcomes a worker
  recorded since it started: completed, error, retrying, lost, ...),
  ``zodbtasks_worker_conflicts_total{worker, step}`` (ZODB conflicts met,
  by the step that met them: claim, run, heartbeat, ...),
  ``zodbtasks_worker_storage_outages_total{worker}``,
  ``zodbtasks_worker_jobs_in_hand{worker}`` and
  ``zodbtasks_worker_last_seen_timestamp_seconds{worker}``;
* ``zodbtasks_run_duration_seconds{task, quantile}`` (0.5 and 0.95) and
  ``zodbtasks_run_duration_runs{task}``: how long the latest runs of the
  newest finished jobs took (at most `RECENT_LIMIT` of each outcome).

Nothing is kept in the collector: every figure is read from the database,
so any number of dashboards (or one per worker host) report the same.
"""
from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from zodbtasks import registry as worker_registry

#: How many finished jobs of each outcome the durations come from.
RECENT_LIMIT = 1000

_CONFLICTS = ' conflicts'
_NOT_RUNS = ('storage outages',)


def snapshot(service, now, recent_limit=RECENT_LIMIT):
    """The figures of ``service`` at ``now`` as plain data (in the caller's
    transaction): a dict the collector turns into metric families."""
    from zodbtasks.dashboard import stats
    completed, failed, _ = stats.recent_finished(service, recent_limit)
    workers = []
    for record in service.workers(now):
        workers.append({
            'name': record.name, 'state': record.state(now),
            'lastSeen': record.lastSeen, 'jobs': len(record.jobs),
            'counters': dict(record.counters)})
    return {
        'counts': dict(service.jobCounts()),
        'queues': dict(service.queueCounts()),
        'paused': bool(service.paused),
        'workers': workers,
        'durations': stats.durations_by_task(completed + failed),
    }


def families(figures):
    """Metric families of a `snapshot`."""
    yield from _job_families(figures)
    yield from _worker_state_families(figures['workers'])
    yield from _worker_record_families(figures['workers'])
    yield from _duration_families(figures['durations'])


def _job_families(figures):
    """The jobs by status and task, by queue and status; the pause."""
    jobs = GaugeMetricFamily('zodbtasks_jobs', 'Jobs kept by the service, '
                             'by status and task.', labels=['status', 'task'])
    for (status, task), n in sorted(figures['counts'].items()):
        jobs.add_metric([status, task], n)
    yield jobs
    queues = GaugeMetricFamily('zodbtasks_queue_jobs', 'Jobs kept by the '
                               'service, by queue and status.',
                               labels=['queue', 'status'])
    for (queue, status), n in sorted(figures.get('queues', {}).items()):
        queues.add_metric([queue, status], n)
    yield queues
    yield GaugeMetricFamily('zodbtasks_service_paused', 'Whether the '
                            'service is paused (1) or not (0).',
                            value=int(figures['paused']))


def _worker_state_families(workers):
    """The worker records by state, and how many are live."""
    states = GaugeMetricFamily('zodbtasks_workers', 'Worker records by '
                               'state.', labels=['state'])
    by_state = dict.fromkeys((worker_registry.LIVE, worker_registry.DEAD,
                              worker_registry.STOPPED), 0)
    for worker in workers:
        by_state[worker['state']] = by_state.get(worker['state'], 0) + 1
    for state, n in sorted(by_state.items()):
        states.add_metric([state], n)
    yield states
    yield GaugeMetricFamily('zodbtasks_live_workers', 'Workers whose record '
                            'is live.', value=by_state[worker_registry.LIVE])


def _worker_record_families(workers):
    """What each worker's record counts: runs, conflicts, outages; its
    jobs in hand and when it was last seen."""
    runs = CounterMetricFamily(
        'zodbtasks_worker_runs', 'Outcomes a worker recorded since it '
        'started, from its record.', labels=['worker', 'outcome'])
    conflicts = CounterMetricFamily(
        'zodbtasks_worker_conflicts', 'ZODB conflicts a worker met, by '
        'step, from its record.', labels=['worker', 'step'])
    outages = CounterMetricFamily(
        'zodbtasks_worker_storage_outages', 'Times a worker lost its '
        'storage, from its record.', labels=['worker'])
    in_hand = GaugeMetricFamily('zodbtasks_worker_jobs_in_hand', 'Jobs a '
                                'worker holds now.', labels=['worker'])
    seen = GaugeMetricFamily(
        'zodbtasks_worker_last_seen_timestamp_seconds', 'When a worker last '
        'renewed its record.', labels=['worker'])
    for worker in workers:
        name = worker['name']
        for key, n in sorted(worker['counters'].items()):
            if not isinstance(n, (int, float)) or isinstance(n, bool):
                continue
            if key.endswith(_CONFLICTS):
                conflicts.add_metric([name, key[:-len(_CONFLICTS)]], n)
            elif key == 'storage outages':
                outages.add_metric([name], n)
            else:
                runs.add_metric([name, key], n)
        in_hand.add_metric([name], worker['jobs'])
        seen.add_metric([name], worker['lastSeen'])
    yield from (runs, conflicts, outages, in_hand, seen)


def _duration_families(durations_by_task):
    """The median and 95th percentile of the runs' durations by task, and
    how many runs they come from."""
    from zodbtasks.dashboard.stats import percentile
    durations = GaugeMetricFamily(
        'zodbtasks_run_duration_seconds', 'How long the latest runs of the '
        'newest finished jobs took, by task.', labels=['task', 'quantile'])
    sampled = GaugeMetricFamily(
        'zodbtasks_run_duration_runs', 'How many runs the durations come '
        'from, by task.', labels=['task'])
    for task, values in sorted(durations_by_task.items()):
        for q in (50, 95):
            durations.add_metric([task, '%g' % (q / 100)],
                                 percentile(values, q))
        sampled.add_metric([task], len(values))
    yield durations
    yield sampled


class MetricsCollector:
    """A Prometheus collector of one service.

    ``read(work)`` must call ``work(service)`` in a transaction of its own
    and return what it returns; ``clock()`` gives the time.
    """

    def __init__(self, read, clock, recent_limit=RECENT_LIMIT):
        self.read = read
        self.clock = clock
        self.recent_limit = recent_limit

    def collect(self):
        now = self.clock()
        figures = self.read(lambda service: snapshot(service, now,
                                                     self.recent_limit))
        return families(figures)


def make_registry(read, clock, recent_limit=RECENT_LIMIT):
    """A registry of its own (not prometheus_client's global one) that
    holds a `MetricsCollector` of the service ``read`` gives."""
    found = CollectorRegistry(auto_describe=False)
    found.register(MetricsCollector(read, clock, recent_limit))
    return found
