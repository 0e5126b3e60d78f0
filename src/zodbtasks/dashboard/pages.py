"""The dashboard's pages: what each reads from the service to show.

The overview, the job list with its filters, one job in full, and the
workers. Each reads in a transaction of its own and aborts it.
"""
from zodbtasks import interfaces
from zodbtasks.dashboard import jobinfo
from zodbtasks.dashboard import stats
from zodbtasks.dashboard import web
from zodbtasks.dashboard.web import HTTPError
from zodbtasks.job import CronJob
from zodbtasks.queues import check_name as check_queue_name

#: The statuses in the order the dashboard shows them: running, waiting,
#: then done (the order of the service's listing).
STATUS_ORDER = interfaces.LISTING_ORDER

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_SHOWN_KEYS = 50     # keys of a job's data (context.data) shown
_SHOWN_LOG = 200     # lines of a job's log shown (the latest)
_LIST_PARAMS = ('status', 'task', 'limit', 'cursor', 'id')


def status_counts(counts):
    """{status: number of jobs}, every status, from ``jobCounts()``."""
    found = dict.fromkeys(STATUS_ORDER, 0)
    for (status, task), n in counts.items():
        found[status] = found.get(status, 0) + n
    return found


def task_table(counts):
    """[(task, {status: n}, total)] for the tasks with jobs, by name."""
    found = {}
    for (status, task), n in counts.items():
        if n:
            found.setdefault(task, {})[status] = n
    return [(task, found[task], sum(found[task].values()))
            for task in sorted(found)]


def list_filters(request):
    """(status, task, limit, cursor, id) of the job list, checked."""
    get = request.GET
    status = get.get('status', '')
    if status and status not in interfaces.STATUSES:
        raise HTTPError(400, 'Unknown status %r; the statuses are %s.' % (
            status, ', '.join(STATUS_ORDER)))
    task = get.get('task', '').strip()
    limit = get.get('limit', '').strip()
    limit = DEFAULT_LIMIT if not limit else web.whole_number(
        limit, 'limit', 1, MAX_LIMIT)
    cursor = get.get('cursor', '') or None
    jobid = get.get('id', '').strip()
    if jobid:
        jobid = web.whole_number(jobid.lstrip('#'), 'id', 0,
                                 10 ** web.ID_DIGITS)
    return status or None, task or None, limit, cursor, jobid or None


def queue_filter(request):
    """The queue the job list is filtered by, checked, or None."""
    queue = request.GET.get('queue', '').strip() or None
    if queue is not None:
        try:
            check_queue_name(queue)
        except ValueError as error:
            raise HTTPError(400, str(error)) from None
    return queue


class Pages:
    """The pages, each a method of the request (and of a job id).

    ``transact`` runs work on the service (see
    `zodbtasks.dashboard.transact.Transactions`), ``render`` fills the
    templates and ``clock()`` gives the time.
    """

    def __init__(self, transact, render, clock, recent_limit):
        self.transact = transact
        self.render = render
        self.clock = clock
        self.recent_limit = recent_limit

    def overview(self, request):
        if any(name in request.GET for name in _LIST_PARAMS):
            # The job list used to be here: send its links on, checked.
            list_filters(request)
            return web.redirect(web.url(request, '/jobs') + '?'
                                + request.query_string)
        now = self.clock()

        def work(service):
            counts = service.jobCounts()
            completed, failed, cut = stats.recent_finished(
                service, self.recent_limit)
            buckets = stats.throughput(completed, failed, now)
            running, _ = service.listJobs(status=interfaces.PROCESSING,
                                          limit=10)
            latest = sorted(completed[:10] + failed[:10],
                            key=lambda j: -(j.completed or 0))[:10]
            return self.render.page(
                request, 'overview.pt', 'Overview', 'overview', service,
                counts=status_counts(counts), total=sum(counts.values()),
                tasks=task_table(counts), chart=stats.Chart(buckets),
                cut=cut, recent_limit=self.recent_limit,
                failures=stats.failures_by_task(counts, failed, now),
                slowest=stats.slowest_tasks(completed + failed),
                sampled=len(completed) + len(failed), running=running,
                latest=latest, live=len(service.liveWorkers(now)),
                unserved=service.unservedTasks(now))
        return self.transact(work)

    def jobs(self, request):
        status, task, limit, cursor, jobid = list_filters(request)
        queue = queue_filter(request)

        def work(service):
            counts = service.jobCounts()
            found = None
            if jobid is not None:
                job = jobinfo.lookup(service, jobid)
                rows, following = ([job] if job is not None else []), None
                found = job is not None
            else:
                try:
                    rows, following = service.listJobs(
                        status=status, task=task, limit=limit, cursor=cursor,
                        queue=queue)
                except ValueError as error:
                    raise HTTPError(400, str(error)) from None
            matching = service.countJobs(status=status, task=task,
                                         queue=queue)
            base = dict(status=status, task=task, queue=queue,
                        limit=limit if limit != DEFAULT_LIMIT else None)
            return self.render.page(
                request, 'jobs.pt', 'Jobs', 'jobs', service,
                status=404 if found is False else 200,
                counts=status_counts(counts), total=sum(counts.values()),
                task_names=sorted({t for (s, t), n in counts.items() if n}),
                statuses=STATUS_ORDER, current=status, task=task,
                queue=queue, queue_names=sorted({
                    q for (q, s), n in service.queueCounts().items() if n}),
                limit=limit, jobid=jobid, found=found, rows=rows,
                matching=matching, base=base,
                next_url=(web.url(request, '/jobs', cursor=following, **base)
                          if following else None),
                first_url=(web.url(request, '/jobs', **base)
                           if cursor else None),
                possible=jobinfo.possibleActions,
                bulk_actions=jobinfo.BULK_ACTIONS)
        return self.transact(work)

    def job(self, request, jobid):
        now = self.clock()

        def work(service):
            job = web.existing_job(service, jobid)
            cron = isinstance(job, CronJob)
            times, problem = jobinfo.nextRuns(job, now) if cron else ([], None)
            data = None
            if getattr(job, 'data', None) is not None:
                data = sorted(job.data.items(), key=lambda i: repr(i[0]))
            heading, error = jobinfo.shownError(job)
            log_lines = tuple(job.log)
            return self.render.page(
                request, 'job.pt', 'Job %d' % jobid, 'jobs', service,
                job=job, cron=cron, schedule=jobinfo.describeSchedule(job),
                next_times=times, schedule_problem=problem,
                queue=getattr(job, 'queue', 'default'),
                priority=getattr(job, 'priority', 5),
                limit=getattr(job, 'limit', None),
                waiting_for=service.waitingFor(jobid, now),
                running=job.status == interfaces.PROCESSING,
                attempts=jobinfo.attempts(job, now),
                possible=jobinfo.possibleActions(job),
                data=None if data is None else data[:_SHOWN_KEYS],
                more_keys=0 if data is None else max(
                    0, len(data) - _SHOWN_KEYS),
                error_heading=heading, error=error,
                log_lines=log_lines[-_SHOWN_LOG:],
                log_cut=max(0, len(log_lines) - _SHOWN_LOG))
        return self.transact(work)

    def workers(self, request):
        now = self.clock()

        def work(service):
            workers = [(w, w.state(now)) for w in service.workers(now)]
            return self.render.page(
                request, 'workers.pt', 'Workers', 'workers', service,
                workers=workers,
                live=sum(1 for w, state in workers if state == 'live'),
                unserved=service.unservedTasks(now))
        return self.transact(work)
