"""A job keeps state between its runs in ``context.data``."""
import io
import json
import types

import persistent.mapping
import pytest
import zope.component

import zodbtasks
from zodbtasks import admin
from zodbtasks.context import current
from zodbtasks.interfaces import ITask
from zodbtasks.processor import SimpleProcessor

from test_processor import opened
from test_processor import stored  # noqa: F401 (a fixture)


def register(name, func):
    zope.component.provideUtility(func, ITask, name=name)


def counting(service, jobid, input):
    """Counts its runs in its data; fails when its input says so."""
    data = current().data
    data['runs'] = data.get('runs', 0) + 1
    if input == 'fail once' and current().attempt == 1:
        raise zodbtasks.TaskError('first attempt fails')
    return data['runs']




def drain(db, now, **options):
    """Run every job due at ``now`` with a real processor, to the end."""
    clock = lambda: now      # noqa: E731
    SimpleProcessor(db, 'app/tasks', waitTime=0.01, untilIdle=True,
                    clock=clock, batchBelow=60, **options)()


def test_a_cron_job_sees_what_its_last_run_left(stored):
    register('counting', counting)
    with opened(stored, commit=True) as service:
        jobid = service.addCronJob('counting', minute=(0,), now=0)
    for hour in (0, 1, 2, 3):        # the first places it at 1 o'clock
        drain(stored, hour * 3600)
    with opened(stored) as service:
        job = service.jobs[jobid]
        assert job.runs == 3
        assert dict(job.data) == {'runs': 3}
        assert job.output == 3


def test_an_interval_job_keeps_its_data_in_the_callers_transaction(service):
    register('counting', counting)
    job = zodbtasks.CronJob(-1, 'counting', None, interval=60, start=0)
    assert job.data is None
    jobid = service.addCronJob('counting', interval=60, start=0, now=0)
    assert not service.processNext(now=0)     # places it at 60
    for now in (60, 120, 180, 240):
        assert service.processNext(now=now)
    assert dict(service.jobs[jobid].data) == {'runs': 4}


def test_a_job_that_never_asks_stores_no_data(stored):
    register('quiet', lambda service, jobid, input: input)
    with opened(stored, commit=True) as service:
        quiet = service.add('quiet', 1, now=0)
    drain(stored, 0)
    with opened(stored) as service:
        job = service.jobs[quiet]
        assert job.status == 'completed'
        assert 'data' not in job.__getstate__()
        assert job.data is None


def test_a_failed_runs_data_is_rolled_back_with_its_other_writes(stored):
    def writes_then_fails(service, jobid, input):
        current().data['seen'] = input
        service._p_jar.root()['app']['written'] = input
        raise zodbtasks.TaskError('no')

    register('counting', counting)
    register('fails', writes_then_fails)
    with opened(stored, commit=True) as service:
        flaky = service.add('counting', 'fail once', retries=1,
                            retryDelay=0, now=0)
        failing = service.add('fails', 'x', now=0)
    drain(stored, 0)
    with opened(stored) as service:
        job = service.jobs[flaky]
        # The first attempt counted 1 and failed: the retry saw nothing.
        assert (job.status, job.attempts, job.output) == ('completed', 2, 1)
        assert dict(job.data) == {'runs': 1}
        job = service.jobs[failing]
        assert job.status == 'error'
        assert job.data is None            # made by the failed run: gone
        assert 'written' not in service._p_jar.root()['app']
        assert 'TaskError: no' in job.log[-1]   # what it told is kept


def test_a_failed_run_keeps_the_data_of_the_run_before(stored):
    def sometimes(input):
        data = current().data
        data['last'] = data.get('last', 0) + 1
        if data['last'] == 2:
            raise zodbtasks.TaskError('second run fails')

    zope.component.provideUtility(zodbtasks.SimpleTask(sometimes),
                                  name='sometimes')
    # processNext runs the job in the caller's transaction.
    with opened(stored, commit=True) as service:
        jobid = service.addCronJob('sometimes', interval=60, start=0, now=0)
        job = service.jobs[jobid]
        assert not service.processNext(now=0)     # places it at 60
        assert service.processNext(now=60)
        assert dict(job.data) == {'last': 1}
        data = job.data
        assert service.processNext(now=120)  # fails: back to what run 1 left
        assert job.error == 'second run fails'
        assert dict(job.data) == {'last': 1} and job.data is data
        assert service.processNext(now=180)  # counts 2 again, fails again
        assert job.runs == 3
    with opened(stored) as service:
        assert dict(service.jobs[jobid].data) == {'last': 1}


def test_writing_data_commits_the_run_in_its_own_transaction(stored):
    """A run that writes only its data is not grouped with others' outcomes:
    its data is committed by the run's transaction."""
    register('counting', counting)
    with opened(stored, commit=True) as service:
        first = service.addCronJob('counting', interval=60, start=0, now=0)
    drain(stored, 0)                 # places it at 60
    drain(stored, 60)                # makes the mapping
    drain(stored, 120)               # writes to the mapping only
    with opened(stored) as service:
        job = service.jobs[first]
        assert dict(job.data) == {'runs': 2}
        # The mapping was written by the commit that recorded the run.
        assert job.data._p_serial == job._p_serial
        assert job.output == 2


def test_a_task_that_only_reads_its_data_writes_nothing(stored):
    register('counting', counting)
    register('reads', lambda service, jobid, input: dict(current().data))
    with opened(stored, commit=True) as service:
        jobid = service.addCronJob('counting', interval=60, start=0, now=0)
    drain(stored, 0)
    drain(stored, 60)
    with opened(stored, commit=True) as service:
        job = service.jobs[jobid]
        job.task = 'reads'
    with opened(stored) as service:
        serial = service.jobs[jobid].data._p_serial
    drain(stored, 120)
    with opened(stored) as service:
        job = service.jobs[jobid]
        assert job.output == {'runs': 1}
        assert job.data._p_serial == serial


def test_show_and_json_show_the_data(stored):
    register('counting', counting)
    register('quiet', lambda service, jobid, input: None)
    with opened(stored, commit=True) as service:
        jobid = service.addCronJob('counting', interval=60, start=0, now=0)
        quiet = service.add('quiet', now=0)
    drain(stored, 0)
    drain(stored, 60)
    with opened(stored) as service:
        assert admin.describe(service.jobs[jobid])['data'] == {'runs': 1}
        assert admin.describe(service.jobs[quiet])['data'] is None
        out = io.StringIO()
        args = types.SimpleNamespace(jobid=str(jobid), json=False, now=90)
        admin.show(service, args, out)
        assert 'data          {"runs": 1}' in out.getvalue().splitlines()
        out = io.StringIO()
        args.json = True
        admin.show(service, args, out)
        assert json.loads(out.getvalue())['data'] == {'runs': 1}


def test_the_dashboard_job_page_shows_the_data(stored):
    webtest = pytest.importorskip('webtest')
    from zodbtasks import dashboard
    register('counting', counting)
    register('quiet', lambda service, jobid, input: None)
    with opened(stored, commit=True) as service:
        jobid = service.addCronJob('counting', interval=60, start=0, now=0)
        quiet = service.add('quiet', now=0)
    drain(stored, 0)
    drain(stored, 60)
    with opened(stored, commit=True) as service:
        service.jobs[jobid].data['<note>'] = 'a & b'
    app = webtest.TestApp(dashboard.make_app(stored, 'app/tasks',
                                             clock=lambda: 90))
    page = app.get('/job/%d' % jobid)
    section = page.html.find(id='data')
    assert section is not None
    rows = [[cell.get_text() for cell in row.find_all(['th', 'td'])]
            for row in section.find_all('tr')]
    assert rows == [["'<note>'", "'a & b'"], ["'runs'", '1']]
    assert '<note>' not in page.text        # escaped
    assert app.get('/job/%d' % quiet).html.find(id='data') is None


def test_the_job_page_shows_the_first_keys_of_large_data(stored):
    webtest = pytest.importorskip('webtest')
    from zodbtasks import dashboard
    register('counting', counting)
    with opened(stored, commit=True) as service:
        jobid = service.add('counting', now=0)
        service.jobs[jobid].data = persistent.mapping.PersistentMapping(
            ('key%03d' % n, n) for n in range(120))
    app = webtest.TestApp(dashboard.make_app(stored, 'app/tasks',
                                             clock=lambda: 90))
    section = app.get('/job/%d' % jobid).html.find(id='data')
    rows = section.find_all('tr')
    assert len(rows) == dashboard._SHOWN_KEYS
    assert rows[-1].th.get_text() == "'key%03d'" % (dashboard._SHOWN_KEYS - 1)
    assert section.p.get_text() == 'and %d more keys' % (
        120 - dashboard._SHOWN_KEYS)
