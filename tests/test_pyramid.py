"""The Pyramid application of docs/workers.rst, served for real.

The application's code is the guide's: the definitions in its Pyramid
section are run here, so that what the guide shows is what is tested.
"""
import doctest
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import pytest
import transaction
import zope.component
import ZEO

import zodbtasks
from zodbtasks import threads
from zodbtasks._testing import Workers
from zodbtasks._testing import WaitressServer
from zodbtasks._testing import ZEOServer
from zodbtasks._testing import waitFor

# An exception in a thread of the test (waitress's loop or task threads) is
# a failure, not a warning in the summary.
pytestmark = pytest.mark.filterwarnings(
    'error::pytest.PytestUnhandledThreadExceptionWarning')

GUIDE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), 'docs', 'workers.rst')
WAIT = 60


def guideExamples():
    """The examples of the guide's Pyramid section that define the
    application, up to the first request."""
    with open(GUIDE, encoding='utf-8') as f:
        text = f.read()
    section = text[text.index('\nPyramid\n-------\n'):]
    section = section[:section.index('A request through the application')]
    return [example.source for example in
            doctest.DocTestParser().get_examples(section)]


def documented():
    """The guide's names (``welcome``, ``signup``, ``main``), defined by
    running its examples; its task is registered on the way."""
    names = {'zope': zope, 'zodbtasks': zodbtasks}
    for source in guideExamples():
        exec(compile(source, GUIDE, 'exec'), names)
    return names


def post(url, **params):
    """POST a form; return (status, parsed JSON body or the text)."""
    data = urllib.parse.urlencode(params).encode()
    try:
        with urllib.request.urlopen(url, data, timeout=WAIT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode('utf-8', 'replace')


Served = WaitressServer


def jobsOf(db):
    """{jobid: (status, result)} of the service, as a new connection sees
    it."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        tm.begin()
        tasks = conn.root()['tasks']
        return {jobid: (job.status, job.output)
                for jobid, job in tasks.jobs.items()}
    finally:
        tm.abort()
        conn.close()


@pytest.fixture
def guide():
    return documented()


def test_the_guide_defines_the_application_it_documents(guide):
    assert {'welcome', 'signup', 'main'} <= set(guide)
    assert zope.component.queryUtility(zodbtasks.interfaces.ITask,
                                       'welcome') is not None


def test_a_view_queues_a_job_that_the_apps_processor_runs(guide, tmp_path):
    """Served by waitress on a FileStorage; the processor thread that the
    application factory starts runs the job."""
    app = guide['main']({}, **{
        'zodbconn.uri': 'file://%s' % (tmp_path / 'Data.fs')})
    db = app.registry._zodb_databases['']
    try:
        with Served(app) as served:
            status, body = post(served.url + '/signup',
                                email='ann@example.org')
            assert status == 200, body
            jobid = body['job']
            # Committed by pyramid_tm before the response was sent.
            assert jobid in jobsOf(db)
            done = waitFor(
                lambda: jobsOf(db)[jobid][0] == 'completed' and jobsOf(db),
                WAIT, 'the processor running the job')
            assert done == {jobid: ('completed',
                                    'welcome mail sent to ann@example.org')}
            assert [keys for (found, keys), _ in threads.running()
                    if found is db] == [('tasks',)]

            # A request that fails after adding its job adds none.
            status, body = post(served.url + '/signup', email='bob')
            assert status == 400
            assert "not an email address: 'bob'" in body
            assert jobsOf(db) == done
    finally:
        assert threads.stopAll(WAIT, db=db)
        db.close()


def test_a_worker_process_runs_the_job_of_a_view_over_zeo(guide, tmp_path):
    """The web process runs no processor (an empty autostart); a real
    ``zodbtasks worker`` process, sharing the database through ZEO, runs
    the job. Its task module is the guide's task."""
    (tmp_path / 'guide_tasks.py').write_text(
        'import zope.component\nimport zodbtasks\n\n'
        + guideExamples()[0] + guideExamples()[1])
    with ZEOServer(str(tmp_path / 'Data.fs')) as zeo:
        app = guide['main']({}, **{'zodbconn.uri': zeo.uri,
                                   'zodbtasks.autostart': ''})
        db = app.registry._zodb_databases['']
        try:
            assert not [db_ for (db_, _), _ in threads.running()
                        if db_ is db]
            with Served(app) as served:
                status, body = post(served.url + '/signup',
                                    email='cy@example.org')
                assert status == 200, body
                jobid = body['job']
                status, body = post(served.url + '/signup', email='dee')
                assert status == 400
            assert jobsOf(db) == {jobid: ('queued', None)}
            with Workers(str(tmp_path), cwd=str(tmp_path)) as workers:
                worker = workers.start(
                    'worker', '--db', zeo.uri, '--service', 'tasks',
                    '--tasks', 'guide_tasks', '--until-idle',
                    '--poll', '0.05')
                assert workers.wait(WAIT) == [0], workers.log(worker)
                log = workers.log(worker)
            assert 'job %d welcome completed' % jobid in log
            db2 = ZEO.DB(zeo.address)
            try:
                assert jobsOf(db2) == {jobid: (
                    'completed', 'welcome mail sent to cy@example.org')}
            finally:
                db2.close()
        finally:
            db.close()
