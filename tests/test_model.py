"""A service driven through random histories, checked against a small model.

Hypothesis adds, cancels, pauses, resumes and runs jobs while a clock moves
forward, and after every step the service must agree with a model that knows
only what the documentation promises:

- no job is lost, and every job sits in exactly the places its status says;
- a job runs only when it is due;
- a plain job runs once, or once more per retry while it fails;
- an interval job runs once per tick that finds one of its times passed
  (missed times are coalesced), and never while it is paused or cancelled.
"""
import zope.component
import zope.component.testing
import zope.event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine
from hypothesis.stateful import invariant
from hypothesis.stateful import precondition
from hypothesis.stateful import rule

import zodbtasks
from zodbtasks import interfaces
from zodbtasks.events import JobStarted

WAITING_IN_AN_INDEX = (interfaces.QUEUED, interfaces.DELAYED,
                       interfaces.CRONJOB, interfaces.RETRYING)


class Model:
    """What the model expects of one job."""

    def __init__(self, kind, fails=False, retries=0, retryDelay=0,
                 interval=None, delay=None):
        self.kind = kind
        self.fails = fails
        self.retries = retries
        self.retryDelay = retryDelay
        self.interval = interval
        self.delay = delay
        self.runs = 0
        self.cancelled = False
        self.paused = False
        self.due = None          # interval jobs: when the next run is due
        self.anchor = None


class ServiceMachine(RuleBasedStateMachine):

    def __init__(self):
        super().__init__()
        zope.component.testing.setUp()
        for name, func in [('ok', lambda input: 'ok'), ('fail', self._fail)]:
            zope.component.provideUtility(zodbtasks.SimpleTask(func),
                                          name=name)
        self.service = zodbtasks.TaskService()
        self.now = 0
        self.models = {}
        self.started = []
        zope.event.subscribers.append(self._watch)

    def teardown(self):
        zope.event.subscribers.remove(self._watch)
        zope.component.testing.tearDown()

    @staticmethod
    def _fail(input):
        raise zodbtasks.TaskError('fails on purpose')

    def _watch(self, event):
        if isinstance(event, JobStarted):
            self.started.append((event.job.id, event.now, event.job.runDue))

    # -- rules ---------------------------------------------------------------

    @rule(fails=st.booleans(), retries=st.integers(0, 2),
          retryDelay=st.sampled_from([0, 30, 300]))
    def add_plain(self, fails, retries, retryDelay):
        jobid = self.service.add('fail' if fails else 'ok', now=self.now,
                                 retries=retries, retryDelay=retryDelay,
                                 retryBackoff=1)
        self.models[jobid] = Model('plain', fails, retries, retryDelay)

    @rule(delay=st.integers(0, 600))
    def add_delayed(self, delay):
        jobid = self.service.addCronJob('ok', delay=delay, now=self.now)
        self.models[jobid] = Model('delayed', delay=delay)

    @rule(interval=st.sampled_from([60, 90, 3600]))
    def add_interval(self, interval):
        jobid = self.service.addCronJob('ok', interval=interval, now=self.now)
        self.models[jobid] = Model('interval', interval=interval)

    def _pick(self, data, predicate):
        ids = sorted(i for i, m in self.models.items() if predicate(m))
        return data.draw(st.sampled_from(ids)) if ids else None

    @precondition(lambda self: self.models)
    @rule(data=st.data())
    def cancel(self, data):
        jobid = self._pick(data, lambda m: True)
        status = self.service.getStatus(jobid)
        self.service.cancel(jobid, now=self.now)
        if status not in interfaces.FINISHED:
            self.models[jobid].cancelled = True

    @precondition(lambda self: self.models)
    @rule(data=st.data())
    def pause(self, data):
        jobid = self._pick(data, lambda m: m.kind == 'interval'
                           and not m.cancelled and not m.paused)
        if jobid is not None:
            self.service.pause(jobid)
            self.models[jobid].paused = True

    @precondition(lambda self: self.models)
    @rule(data=st.data())
    def resume(self, data):
        jobid = self._pick(data, lambda m: m.paused and not m.cancelled)
        if jobid is not None:
            self.service.resume(jobid, now=self.now)
            model = self.models[jobid]
            model.paused = False
            if model.due is None:
                # Paused before its first tick: resuming places it.
                model.due = self.now + model.interval
            else:
                # It goes on at its first time after now, on its old grid.
                model.due = self._nextOnGrid(model, self.now)

    @rule(seconds=st.integers(0, 2000))
    def advance(self, seconds):
        self.now += seconds

    @rule()
    def tick(self):
        before = {jobid: self.service.jobs[jobid].status
                  for jobid in self.models}
        due = {jobid: self.service.jobs[jobid].scheduledFor
               for jobid in self.models}
        del self.started[:]
        self.service.process(now=self.now)
        for jobid, now, runDue in self.started:
            # A job runs only when it is due.
            assert now == self.now
            if before[jobid] != interfaces.QUEUED:
                assert runDue is not None and runDue <= now, (jobid, runDue)
        self._expect(before, due)

    def _expect(self, before, due):
        ran = {}
        for jobid, _, _ in self.started:
            ran[jobid] = ran.get(jobid, 0) + 1
        for jobid, model in self.models.items():
            count = ran.get(jobid, 0)
            if model.kind == 'interval':
                count_expected = 0
                if model.due is None and not model.cancelled and not (
                        model.paused):
                    # The first tick after it was added places it.
                    model.anchor = self.now
                    model.due = self.now + model.interval
                elif (model.due is not None and not model.cancelled
                      and not model.paused and model.due <= self.now):
                    count_expected = 1
                    model.due = self._nextOnGrid(model, self.now)
                assert count == count_expected, (jobid, count, model.__dict__)
            elif model.kind == 'delayed':
                assert count <= 1
                if count and due[jobid] is None:
                    # Placed by this very tick: only a zero delay is due.
                    assert model.delay == 0
                elif count:
                    assert due[jobid] <= self.now
            model.runs += count

    @staticmethod
    def _nextOnGrid(model, now):
        steps = (now - model.due) // model.interval + 1
        return model.due + steps * model.interval

    # -- invariants ----------------------------------------------------------

    @invariant()
    def no_job_is_lost_and_each_is_in_one_place(self):
        service = self.service
        places = {}
        for _, jobid in service._indexes.queued():
            places.setdefault(jobid, []).append('queue')
        for name in ('_scheduled', '_unplaced'):
            for jobid in getattr(service, name).values():
                places.setdefault(jobid, []).append(name)
        for status in interfaces.FINISHED:
            for jobid in service._catalog.finished_ids(status):
                places.setdefault(jobid, []).append(status)
        assert set(service.jobs) == set(self.models)
        for jobid, model in self.models.items():
            job = service.jobs[jobid]
            where = places.get(jobid, [])
            if job.status in WAITING_IN_AN_INDEX:
                assert len(where) == 1 and where[0] in (
                    'queue', '_scheduled', '_unplaced'), (job.status, where)
            elif job.status in interfaces.FINISHED:
                assert where == [job.status]
            else:
                assert job.status == interfaces.PAUSED and where == []
            if model.cancelled:
                assert job.status == interfaces.CANCELLED
            elif model.paused:
                assert job.status == interfaces.PAUSED

    @invariant()
    def every_job_but_the_running_is_listed_once_as_what_it_is(self):
        service = self.service
        listed = {}
        for shard in service._listing:
            for key, tree in shard.items():
                for jobid in tree.values(min=0):
                    listed.setdefault(jobid, []).append(key)
        for jobid, job in service.jobs.items():
            if job.status == interfaces.PROCESSING:
                assert jobid not in listed
            else:
                assert listed.get(jobid) == [(job.status, job.task)]
        assert set(listed) <= set(service.jobs)
        pages, cursor = [], None
        for _ in range(len(self.models) + 1):
            page, cursor = service.listJobs(limit=3, cursor=cursor)
            pages.extend(job.id for job in page)
            if cursor is None:
                break
        assert sorted(pages) == sorted(service.jobs)

    @invariant()
    def plain_jobs_run_once_or_once_per_retry(self):
        for jobid, model in self.models.items():
            if model.kind != 'plain':
                continue
            job = self.service.jobs[jobid]
            if job.status == interfaces.COMPLETED:
                assert model.runs == 1 and not model.fails
            elif job.status == interfaces.ERROR:
                assert model.fails and model.runs == model.retries + 1
            elif job.status == interfaces.RETRYING:
                assert model.fails and 1 <= model.runs <= model.retries
            else:
                assert model.runs <= model.retries + 1


ServiceMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None)
test_service_model = ServiceMachine.TestCase
