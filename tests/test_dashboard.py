"""The web dashboard: WSGI-level tests, and one run in headless Chromium."""
import os
import re
import shutil
import socket

import pytest
from persistent.mapping import PersistentMapping
import ZODB
import ZODB.FileStorage
from ZODB.POSException import ConflictError

import zodbtasks
from zodbtasks import schedule

REQUIRE_BROWSER = bool(os.environ.get('ZODBTASKS_REQUIRE_BROWSER'))

if REQUIRE_BROWSER:
    import webob  # noqa: F401  (CI must have the dashboard extra)
    import webtest
else:
    webob = pytest.importorskip('webob')
    webtest = pytest.importorskip('webtest')

from zodbtasks import dashboard  # noqa: E402
from zodbtasks._testing import WaitressServer  # noqa: E402
from zodbtasks.dashboard import auth  # noqa: E402
from zodbtasks.dashboard import stats  # noqa: E402

NOW = 1_700_000_000          # 2023-11-14 22:13:20 UTC
PATH = 'app/tasks'


def _service(conn):
    return conn.root()['app']['tasks']


def populate(db):
    """A service at app/tasks with one job of each interesting kind."""
    ids = {}
    with db.transaction() as conn:
        conn.root()['app'] = app = PersistentMapping()
        app['tasks'] = service = zodbtasks.TaskService()
        ids['failed'] = service.add('crash', '<b>bold</b>', now=NOW - 300)
        service.processNext(now=NOW - 200)
        failed = service.jobs[ids['failed']]
        failed.log += ('<script>alert("log")</script>',)
        ids['cron'] = service.addCronJob('echo', cron='*/15 * * * *',
                                         timezone='Europe/Paris',
                                         now=NOW - 100)
        ids['delayed'] = service.addCronJob('echo', 'later', delay=3600,
                                            now=NOW - 90)
        service.processNext(now=NOW - 80)    # places the two above
        ids['running'] = service.add('fail', 'r', now=NOW - 70)
        assert service.claimNextJob(now=NOW - 60, worker='worker-7',
                                    lease=600) == ids['running']
        service.jobs[ids['running']].progress = (0.25, 'a quarter <done>')
        ids['queued'] = service.add('echo', 'q', now=NOW - 50)
        ids['queued2'] = service.add('echo', 'q2', now=NOW - 40)
    return ids


def status(db, jobid):
    """A job's status as a fresh connection sees it."""
    with db.transaction() as conn:
        return _service(conn).jobs[jobid].status


@pytest.fixture
def ids(db, tasks):
    return populate(db)


@pytest.fixture
def app(db, ids):
    return webtest.TestApp(dashboard.make_app(db, PATH, clock=lambda: NOW,
                                              secret=b'k' * 32))


def action_form(page, jobid, action):
    wanted = '/job/%d/%s' % (jobid, action)
    forms = [f for f in page.forms.values() if f.action == wanted]
    assert forms, 'no %s button on the page' % action
    return forms[0]


def counts_on(page):
    return {m.group(1): int(m.group(2)) for m in re.finditer(
        r'data-count="([^"]+)">(\d+)<', page.text)}


# -- reading ------------------------------------------------------------------

def test_the_list_shows_every_job_and_the_counts_by_status(app, ids):
    page = app.get('/jobs')
    assert page.content_type == 'text/html'
    for jobid in ids.values():
        assert 'id="job-%d"' % jobid in page.text
    assert counts_on(page) == {
        '*': 6, 'queued': 2, 'processing': 1, 'retrying': 0, 'delayed': 1,
        'cronjob': 1, 'paused': 0, 'start later': 0, 'error': 1,
        'cancelled': 0, 'completed': 0}
    # in the service's listing order: running, queued (in claim order), ...
    rows = [int(r) for r in re.findall(r'<tr id="job-(\d+)"', page.text)]
    assert rows == [ids['running'], ids['queued'], ids['queued2'],
                    ids['delayed'], ids['cron'], ids['failed']]


def shown_rows(page):
    return [int(r) for r in re.findall(r'<tr id="job-(\d+)"', page.text)]


def test_the_list_filters_by_status_task_and_limit(app, ids):
    page = app.get('/jobs', {'status': 'error'})
    assert shown_rows(page) == [ids['failed']]
    page = app.get('/jobs', {'task': 'echo'})
    assert set(shown_rows(page)) == {ids['cron'], ids['delayed'],
                                     ids['queued'], ids['queued2']}
    assert shown_rows(app.get('/jobs', {'task': 'ech'})) == []  # exact names
    page = app.get('/jobs', {'status': 'queued', 'task': 'echo',
                             'limit': '1'})
    assert shown_rows(page) == [ids['queued']]
    assert 'Showing 1 of\n  2 matching' in page.text
    # the next page, through the cursor the service gave
    page = page.click(linkid='next-page')
    assert shown_rows(page) == [ids['queued2']]
    assert 'id="next-page"' not in page.text
    assert 'id="first-page"' in page.text
    page = app.get('/jobs', {'status': 'completed'})
    assert 'No job\n  matches.' in page.text
    # the counts stay those of the whole service
    assert counts_on(page)['*'] == 6
    app.get('/jobs', {'status': 'nonsense'}, status=400)
    app.get('/jobs', {'limit': '0'}, status=400)
    app.get('/jobs', {'limit': 'x'}, status=400)
    # the old links of the list (at /) lead to it, once checked
    old = app.get('/', {'status': 'error'}, status=303)
    assert old.location == 'http://localhost/jobs?status=error'
    app.get('/', {'status': 'nonsense'}, status=400)


def test_search_by_id(app, ids):
    page = app.get('/jobs', {'id': str(ids['cron'])})
    assert shown_rows(page) == [ids['cron']]
    page = app.get('/jobs', {'id': '12345'}, status=404)
    assert 'No job has\n  the id 12345' in page.text
    app.get('/jobs', {'id': 'abc'}, status=400)


def test_the_job_page_shows_error_traceback_and_log(app, ids):
    page = app.get('/job/%d' % ids['failed'])
    assert 'id="error"' in page.text and 'ZeroDivisionError' in page.text
    assert 'id="traceback"' in page.text
    assert 'Traceback (most recent call last)' in page.text
    assert '&lt;script&gt;alert("log")&lt;/script&gt;' in page.text
    assert '<script>alert' not in page.text
    assert "'&lt;b&gt;bold&lt;/b&gt;'" in page.text   # the input
    assert '<b>bold' not in page.text
    assert '/job/%d/retry' % ids['failed'] in page.text
    assert '/job/%d/cancel' % ids['failed'] not in page.text


def test_the_job_page_shows_progress_and_lease(app, ids):
    page = app.get('/job/%d' % ids['running'])
    assert '<progress max="1" value="0.25">' in page.text
    assert 'a quarter &lt;done&gt;' in page.text
    assert 'held by worker-7 until' in page.text
    assert '1970' not in page.text


def test_the_job_page_shows_the_schedule_and_its_next_runs(app, ids, db):
    page = app.get('/job/%d' % ids['cron'])
    assert "cron '*/15 * * * *' in Europe/Paris" in page.text
    with db.transaction() as conn:
        expected = schedule.next_times(_service(conn).jobs[ids['cron']]
                                       .schedule, NOW, 5)
    section = page.text.split('id="next-runs"')[1].split('</ol>')[0]
    assert re.findall(r'data-epoch="([\d.]+)"', section) == \
        [str(t) for t in expected]
    assert '2023-11-14 23:15:00 CET (2023-11-14 22:15:00 UTC)' in section
    page = app.get('/job/%d' % ids['delayed'])
    assert 'once, 3600 seconds after' in page.text


def test_the_next_runs_of_an_interval_count_from_its_due_time(service):
    jobid = service.addCronJob('echo', interval=600, now=NOW)
    service.processNext(now=NOW + 7)              # places it at NOW + 607
    job = service.jobs[jobid]
    times, problem = dashboard.nextRuns(job, NOW + 10, 3)
    assert problem is None
    assert times[0] == job.scheduledFor == job.timeOfNextCall(NOW + 10)
    assert times == [job.scheduledFor + 600 * n for n in range(3)]

def test_unknown_jobs_and_pages_are_404(app, ids):
    app.get('/job/12345', status=404)
    app.get('/job/abc', status=404)
    app.get('/job/-1', status=404)
    app.get('/nowhere', status=404)
    token = app.app.token(app.cookies[dashboard.COOKIE])
    app.post('/job/12345/cancel', {'csrf_token': token}, status=404)
    app.post('/job/%d/explode' % ids['queued'], {'csrf_token': token},
             status=404)
    app.get('/job/%d/cancel' % ids['queued'], status=405)
    app.post('/', status=405)


def test_counts_as_json(app, ids, db):
    response = app.get('/api/counts')
    assert response.content_type == 'application/json'
    assert response.json['counts']['queued'] == 2
    assert response.json['total'] == 6
    assert response.json['paused'] is False
    with db.transaction() as conn:
        _service(conn).add('echo', now=NOW)
    assert app.get('/api/counts').json['counts']['queued'] == 3


def test_pages_carry_security_headers_and_a_strict_cookie(app):
    response = app.get('/')
    csp = response.headers['Content-Security-Policy']
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers['X-Frame-Options'] == 'DENY'
    cookie = response.headers['Set-Cookie']
    assert 'HttpOnly' in cookie and 'SameSite=Strict' in cookie
    assert '<script>' not in response.text    # no inline script
    assert response.text.startswith('<!DOCTYPE html>')
    # the service's buttons carry the token as scripts find it (Zope's tests)
    token = app.app.token(app.cookies[dashboard.COOKIE])
    assert re.search(r'name="csrf_token" value="(\w+)"',
                     response.text).group(1) == token
    js = app.get('/static/dashboard.js')
    assert js.content_type == 'application/javascript'
    assert '/api/counts' in response.text and 'fetch(' in js.text


# -- changing -----------------------------------------------------------------

def test_a_post_without_a_good_token_is_refused_and_changes_nothing(app, ids,
                                                                    db):
    url = '/job/%d/cancel' % ids['queued']
    app.post(url, status=403)                         # no cookie, no token
    app.get('/')                                      # now with a session
    app.post(url, status=403)                         # no token
    app.post(url, {'csrf_token': 'bad'}, status=403)
    good = app.app.token(app.cookies[dashboard.COOKIE])
    other = webtest.TestApp(app.app)                  # another session
    other.get('/')
    other.post(url, {'csrf_token': good}, status=403)
    # a token made with another secret
    stranger = dashboard.make_app(db, PATH).token(app.cookies[
        dashboard.COOKIE])
    app.post(url, {'csrf_token': stranger}, status=403)
    app.post('/service/pause', status=403)
    assert status(db, ids['queued']) == 'queued'
    with db.transaction() as conn:
        assert not _service(conn).paused
    # ... and the form's token works
    action_form(app.get('/jobs'), ids['queued'], 'cancel').submit(status=303)
    assert status(db, ids['queued']) == 'cancelled'


def test_cancel(app, ids, db):
    page = app.get('/jobs')
    response = action_form(page, ids['queued'], 'cancel').submit(status=303)
    assert response.location == 'http://localhost/jobs'
    assert status(db, ids['queued']) == 'cancelled'
    page = response.follow()
    assert '/job/%d/cancel' % ids['queued'] not in page.text
    assert counts_on(page)['cancelled'] == 1


def test_retry(app, ids, db):
    page = app.get('/job/%d' % ids['failed'])
    response = action_form(page, ids['failed'], 'retry').submit(status=303)
    assert response.location == 'http://localhost/job/%d' % ids['failed']
    assert status(db, ids['failed']) == 'queued'


def test_pause_and_resume(app, ids, db):
    page = app.get('/job/%d' % ids['cron'])
    page = action_form(page, ids['cron'], 'pause').submit(status=303).follow()
    assert status(db, ids['cron']) == 'paused'
    assert '/job/%d/pause"' % ids['cron'] not in page.text
    action_form(page, ids['cron'], 'resume').submit(status=303)
    assert status(db, ids['cron']) == 'cronjob'
    with db.transaction() as conn:
        assert _service(conn).jobs[ids['cron']].scheduledFor == \
            schedule.next_times(_service(conn).jobs[ids['cron']].schedule,
                                NOW, 1)[0]


def test_run_now(app, ids, db):
    page = app.get('/job/%d' % ids['delayed'])
    action_form(page, ids['delayed'], 'run-now').submit(status=303)
    with db.transaction() as conn:
        job = _service(conn).jobs[ids['delayed']]
        assert (job.status, job.scheduledFor) == ('delayed', NOW)


def test_pause_and_resume_the_service(app, db):
    page = app.get('/')
    [form] = [f for f in page.forms.values()
              if f.action == '/service/pause']
    page = form.submit(status=303).follow()
    assert 'id="service-paused"' in page.text
    with db.transaction() as conn:
        assert _service(conn).paused
    assert app.get('/api/counts').json['paused'] is True
    [form] = [f for f in page.forms.values()
              if f.action == '/service/resume']
    form.submit(status=303)
    with db.transaction() as conn:
        assert not _service(conn).paused


def test_an_action_that_does_not_apply_is_a_conflict(app, ids, db):
    token = app.app.token(app.get('/') and app.cookies[dashboard.COOKIE])
    response = app.post('/job/%d/retry' % ids['queued'],
                        {'csrf_token': token}, status=409)
    assert 'only a failed, cancelled or retrying job' in response.text
    assert status(db, ids['queued']) == 'queued'


def test_next_may_only_point_into_the_app(app, ids):
    app.get('/')
    token = app.app.token(app.cookies[dashboard.COOKIE])
    response = app.post('/job/%d/pause' % ids['queued'],
                        {'csrf_token': token, 'next': '//evil.example/'},
                        status=303)
    assert response.location == 'http://localhost/job/%d' % ids['queued']


def test_conflicts_are_tried_again(app, ids, db, monkeypatch):
    app.get('/')
    token = app.app.token(app.cookies[dashboard.COOKIE])
    real = zodbtasks.TaskService.cancel
    calls = []

    def flaky(self, jobid, now=None):
        calls.append(jobid)
        real(self, jobid, now)
        if len(calls) < 3:
            raise ConflictError()
    monkeypatch.setattr(zodbtasks.TaskService, 'cancel', flaky)
    app.post('/job/%d/cancel' % ids['queued'], {'csrf_token': token},
             status=303)
    assert len(calls) == 3
    assert status(db, ids['queued']) == 'cancelled'
    # a conflict every time: nothing is written
    monkeypatch.setattr(zodbtasks.TaskService, 'cancel',
                        _always_conflict(real))
    app.post('/job/%d/cancel' % ids['queued2'], {'csrf_token': token},
             status=503)
    assert status(db, ids['queued2']) == 'queued'


def _always_conflict(real):
    def cancel(self, jobid, now=None):
        real(self, jobid, now)
        raise ConflictError()
    return cancel


def test_a_script_may_send_the_token_in_a_header(app, ids, db):
    app.get('/')
    token = app.app.token(app.cookies[dashboard.COOKIE])
    app.post('/job/%d/cancel' % ids['queued'], status=303,
             headers={'X-CSRF-Token': token})
    assert status(db, ids['queued']) == 'cancelled'


def test_links_follow_the_mount_point(db, ids):
    app = webtest.TestApp(dashboard.make_app(db, PATH),
                          extra_environ={'SCRIPT_NAME': '/dash'})
    page = app.get('/dash/jobs')
    assert 'href="/dash/job/%d"' % ids['queued'] in page.text
    assert 'action="/dash/job/%d/cancel"' % ids['queued'] in page.text
    assert 'data-counts-url="/dash/api/counts"' in page.text
    [form] = [f for f in page.forms.values()
              if f.action == '/dash/job/%d/cancel' % ids['queued']]
    assert form.submit(status=303).location == 'http://localhost/dash/jobs'
    assert status(db, ids['queued']) == 'cancelled'

def test_allowed_hosts_defeat_dns_rebinding(db, ids):
    app = webtest.TestApp(dashboard.make_app(
        db, PATH, allowed_hosts=('127.0.0.1', 'localhost')))
    app.get('/', extra_environ={'HTTP_HOST': 'localhost:8080'})
    app.get('/', extra_environ={'HTTP_HOST': '127.0.0.1:8080'})
    app.get('/', extra_environ={'HTTP_HOST': 'evil.example:8080'}, status=400)


def test_a_missing_service_is_an_error_page(db, tasks):
    app = webtest.TestApp(dashboard.make_app(db, 'nothing/here'))
    response = app.get('/', status=500)
    assert 'No task service' in response.text


# -- the overview -------------------------------------------------------------

def finish(service, task, started, took, error=None, worker='w1'):
    """A job of ``task`` whose run began at ``started`` and took ``took``."""
    jobid = service.add(task, now=started - 1)
    assert service.claimNextJob(now=started, worker=worker,
                                lease=600) == jobid
    token = service.jobs[jobid].lease.token
    outcome = service.runClaimed(jobid, token, now=started)
    outcome.completed = started + took
    if error:
        outcome.failed, outcome.output = True, None
        outcome.error, outcome.traceback = error, None
    service.recordOutcome(jobid, token, outcome)
    return jobid


@pytest.fixture
def timed(db, tasks):
    """A service whose jobs finished at known times before NOW."""
    with db.transaction() as conn:
        conn.root()['app'] = app = PersistentMapping()
        app['tasks'] = service = zodbtasks.TaskService()
        # echo: ten runs of 1..10 s, two minutes ago
        for n in range(1, 11):
            finish(service, 'echo', NOW - 120, float(n))
        # crash: two failed runs of 30 s, one this minute, one 70 min ago
        finish(service, 'crash', NOW - 40, 30.0, error='ZeroDivisionError')
        finish(service, 'crash', NOW - 4200, 30.0, error='ZeroDivisionError')
        service.add('echo', now=NOW)
    return webtest.TestApp(dashboard.make_app(db, PATH, clock=lambda: NOW))


def test_percentiles_are_nearest_rank():
    values = [float(n) for n in range(1, 11)]
    assert stats.percentile(values, 50) == 5.0
    assert stats.percentile(values, 95) == 10.0
    assert stats.percentile(values, 10) == 1.0
    assert stats.percentile([7.0], 95) == 7.0
    assert stats.percentile([], 50) is None


def test_throughput_counts_each_finished_run_in_its_minute(db, timed):
    with db.transaction() as conn:
        completed, failed, cut = stats.recent_finished(_service(conn))
        assert (len(completed), len(failed), cut) == (10, 2, False)
        buckets = stats.throughput(completed, failed, NOW)
    assert len(buckets) == 60
    # finished at NOW - 120 + n, 110 to 119 s ago: the minute before this one
    assert buckets[-2] == (10, 0) and buckets[-3] == (0, 0)
    assert buckets[-1] == (0, 1)          # the crash that ended at NOW - 10
    assert sum(c + f for c, f in buckets) == 11  # the other is too old
    with db.transaction() as conn:
        completed, failed, cut = stats.recent_finished(_service(conn), 4)
    assert (len(completed), len(failed), cut) == (4, 2, True)


def test_the_overview_shows_counts_chart_failures_and_slowest(timed):
    page = timed.get('/')
    html = page.html
    assert counts_on(page)['completed'] == 10
    assert counts_on(page)['error'] == 2 and counts_on(page)['*'] == 13
    bars = html.select('#throughput svg rect.bar')
    assert [b['class'] for b in bars] == [['bar', 'completed'],
                                          ['bar', 'failed']]
    done, failed = bars
    assert done.title.get_text() == '1 min ago: 10 completed'
    assert failed.title.get_text() == 'this minute: 1 failed'
    # the tallest bar (10 runs) fills the plot; 1 run is a tenth of it
    chart = stats.Chart([(0, 0)] * 58 + [(10, 0), (0, 1)])
    assert float(done['height']) == chart.height - chart.bottom - chart.top
    assert float(failed['height']) == pytest.approx(float(done['height']) / 10,
                                                    abs=0.1)
    rows = [[td.get_text(strip=True) for td in tr.find_all('td')]
            for tr in html.select('#failures tbody tr')]
    assert rows == [['crash', '2', '1', '0']]
    rows = {tr['data-task']: (tr.select_one('.p50').get_text(),
                              tr.select_one('.p95').get_text())
            for tr in html.select('#slowest tbody tr')}
    assert rows == {'crash': ('30.0 s', '30.0 s'), 'echo': ('5.0 s', '10.0 s')}
    assert [tr['data-task'] for tr in html.select('#slowest tbody tr')] == [
        'crash', 'echo']
    latest = html.select('#latest tbody tr')
    assert len(latest) == 10
    by_task = {tr['data-task']: tr.find_all('td')[1].get_text()
               for tr in html.select('#by-task tbody tr')}
    assert by_task == {'crash': '2', 'echo': '11'}


def test_the_overview_says_when_its_bound_left_jobs_out(db, timed):
    app = webtest.TestApp(dashboard.make_app(db, PATH, clock=lambda: NOW,
                                             recent_limit=4))
    page = app.get('/')
    assert 'Counted from the newest 4' in page.text
    assert len(page.html.select('#throughput svg rect.bar')) == 2
    assert 'Counted from the newest' not in timed.get('/').text

def test_the_overview_of_an_empty_service(db, tasks):
    with db.transaction() as conn:
        conn.root()['tasks'] = zodbtasks.TaskService()
    page = webtest.TestApp(dashboard.make_app(db, 'tasks')).get('/')
    assert page.html.select('#throughput svg rect.bar') == []
    assert 'No finished run to time.' in page.text
    assert 'No failed or retrying job.' in page.text


# -- the job page -------------------------------------------------------------

def test_the_job_page_lists_the_runs_the_job_records(db, tasks):
    with db.transaction() as conn:
        conn.root()['app'] = app = PersistentMapping()
        app['tasks'] = service = zodbtasks.TaskService()
        jobid = service.add('fail', retries=2, retryDelay=0, now=NOW - 100)
        service.processNext(now=NOW - 90)           # fails, retrying
        service.processNext(now=NOW - 80)           # fails again
        assert service.claimNextJob(now=NOW - 10, worker='w-9',
                                    lease=600) == jobid
        service.jobs[jobid].lease.started = NOW - 9
        service.jobs[jobid].progress = (0.4, 'busy')
    app = webtest.TestApp(dashboard.make_app(db, PATH, clock=lambda: NOW))
    page = app.get('/job/%d' % jobid)
    runs = [[td.get_text(' ', strip=True) for td in tr.find_all('td')]
            for tr in page.html.select('#attempts tbody tr')]
    assert [r[0] for r in runs] == ['running', 'failed', 'failed']
    assert runs[0][4] == 'w-9' and runs[0][3] == '9.0 s ago'
    # the runs before, from the job's history, latest first
    assert runs[1][1:4] == ['2023-11-14 22:12:00 UTC',
                            '2023-11-14 22:12:00 UTC', '0.0 s']
    assert runs[2][1:3] == ['2023-11-14 22:11:50 UTC',
                            '2023-11-14 22:11:50 UTC']
    assert 'it failed' in runs[1][5] and 'it failed' in runs[2][5]
    # a running job: its progress, and the error said to be the last run's
    assert page.html.find('progress')['value'] == '0.4'
    assert page.html.select_one('#error h3').get_text() == \
        'Error of the previous run'
    # once it failed for good: no progress bar, the error is its own
    with db.transaction() as conn:
        service = _service(conn)
        job = service.jobs[jobid]
        outcome = service.runClaimed(jobid, job.lease.token, now=NOW - 5)
        service.recordOutcome(jobid, job.lease.token, outcome)
        assert job.status == 'error'
    page = app.get('/job/%d' % jobid)
    assert page.html.find('progress') is None
    assert 'Last progress' in page.text
    assert page.html.select_one('#error h3').get_text() == 'Error'
    runs = [[td.get_text(' ', strip=True) for td in tr.find_all('td')]
            for tr in page.html.select('#attempts tbody tr')]
    assert [r[0] for r in runs] == ['failed', 'failed', 'failed']
    assert runs[0][1:4] == ['2023-11-14 22:13:15 UTC',
                            '2023-11-14 22:13:15 UTC', '0.0 s']


def test_queue_and_priority_are_shown_where_jobs_have_them(app, ids, db):
    with db.transaction() as conn:
        job = _service(conn).jobs[ids['queued']]
        job.queue, job.priority = 'mail', 8
    page = app.get('/job/%d' % ids['queued'])
    fields = {tr.th.get_text(): tr.td.get_text()
              for tr in page.html.select('#fields tr')}
    assert (fields['Queue'], fields['Priority']) == ('mail', '8')
    fields = {tr.th.get_text(): tr.td.get_text()
              for tr in app.get('/job/%d' % ids['queued2']).html.select(
                  '#fields tr')}
    assert (fields['Queue'], fields['Priority']) == ('default', '5')
    assert 'Limit' not in fields and 'Waiting for' not in fields

    row = app.get('/jobs').html.find(id='job-%d' % ids['queued'])
    assert [td.get_text() for td in row.find_all('td')][3:5] == ['mail', '8']


def test_the_job_list_filters_by_queue(db, tasks):
    with db.transaction() as conn:
        conn.root()['app'] = app = PersistentMapping()
        app['tasks'] = service = zodbtasks.TaskService()
        mail = service.add('echo', now=NOW, queue='mail')
        service.add('echo', now=NOW)
    app = webtest.TestApp(dashboard.make_app(db, PATH, clock=lambda: NOW))
    page = app.get('/jobs?queue=mail')
    assert [tr['id'] for tr in page.html.select('tr[id^=job-]')] == [
        'job-%d' % mail]
    options = [o['value'] for o in page.html.select('select[name=queue] '
                                                    'option')]
    assert options == ['', 'default', 'mail']
    assert app.get('/jobs?queue=no%20such', status=400)


def test_the_job_page_says_when_a_rate_lets_the_job_start(db, tasks):
    with db.transaction() as conn:
        conn.root()['app'] = app = PersistentMapping()
        app['tasks'] = service = zodbtasks.TaskService()
        service.setLimit('api', rate='1/h', now=NOW)
        first = service.add('echo', now=NOW, limit='api')
        second = service.add('echo', now=NOW, limit='api')
        assert service.claimNextJob(now=NOW) == first
    app = webtest.TestApp(dashboard.make_app(db, PATH, clock=lambda: NOW))
    fields = {tr.th.get_text(): tr.td.get_text(' ', strip=True)
              for tr in app.get('/job/%d' % second).html.select('#fields tr')}
    assert fields['Limit'] == 'api'
    assert fields['Waiting for'].startswith('rate limited until ')
    assert 'at most 1/h' in fields['Waiting for']


def test_a_start_later_job_is_started_from_its_page(app, db, ids):
    with db.transaction() as conn:
        later = _service(conn).add('echo', 'l', startLater=True, now=NOW)
    page = app.get('/job/%d' % later)
    response = action_form(page, later, 'start').submit(status=303)
    assert response.location == 'http://localhost/job/%d' % later
    assert status(db, later) == 'queued'
    # not a start-later job any more: refused, nothing written
    token = app.app.token(app.cookies[dashboard.COOKIE])
    answer = app.post('/job/%d/start' % later, {'csrf_token': token},
                      status=409)
    assert 'only a job waiting to be started' in answer.text
    assert '/job/%d/start' % later not in app.get('/job/%d' % later).text


# -- bulk actions -------------------------------------------------------------

def bulk(app, action, jobids, **kw):
    app.get('/jobs')
    token = app.app.token(app.cookies[dashboard.COOKIE])
    return app.post('/jobs/bulk', [('csrf_token', token), ('action', action)]
                    + [('job', str(j)) for j in jobids], **kw)


def test_bulk_cancel_changes_what_applies_and_says_what_did_not(app, ids, db):
    page = bulk(app, 'cancel', [ids['queued'], ids['queued2'], ids['failed'],
                                424242], status=200)
    assert status(db, ids['queued']) == status(db, ids['queued2']) == \
        'cancelled'
    assert status(db, ids['failed']) == 'error'
    skipped = {int(tr.td.get_text()): tr.find_all('td')[1].get_text()
               for tr in page.html.select('#bulk-skipped tr')}
    assert set(skipped) == {ids['failed'], 424242}
    assert skipped[424242] == 'no such job'
    assert page.html.h2.get_text() == 'Cancel: 2 job(s) changed'


def test_bulk_retry_queues_failed_jobs_again(app, ids, db):
    with db.transaction() as conn:
        service = _service(conn)
        more = service.add('crash', now=NOW - 20)
        service.pause(ids['queued'])          # so that more runs next
        service.pause(ids['queued2'])
        service.processNext(now=NOW - 19)
        assert service.jobs[more].status == 'error'
    bulk(app, 'retry', [ids['failed'], more], status=200)
    assert status(db, ids['failed']) == status(db, more) == 'queued'


def test_bulk_actions_are_checked_before_anything_changes(app, ids, db):
    app.get('/jobs')
    token = app.app.token(app.cookies[dashboard.COOKIE])
    app.post('/jobs/bulk', {'action': 'cancel', 'job': str(ids['queued'])},
             status=403)
    for form in ([('action', 'explode'), ('job', str(ids['queued']))],
                 [('action', 'cancel')],
                 [('action', 'cancel'), ('job', str(ids['queued'])),
                  ('job', '²')],
                 [('action', 'cancel'), ('job', str(ids['queued'])),
                  ('job', '-3')]):
        app.post('/jobs/bulk', [('csrf_token', token)] + form, status=400)
    app.get('/jobs/bulk', status=405)
    assert status(db, ids['queued']) == 'queued'


# -- bad input ----------------------------------------------------------------

@pytest.mark.parametrize('url', [
    '/?limit=%C2%B2', '/jobs?limit=%C2%B2', '/jobs?limit=-1',
    '/jobs?limit=1001', '/jobs?limit=99999999999999999999999',
    '/?task=%ff%fe', '/jobs?task=%ff%fe', '/jobs?status=%ff',
    '/jobs?cursor=nonsense', '/jobs?cursor=%C2%B2', '/jobs?id=%C2%B2'])
def test_bad_queries_are_400(app, url):
    page = app.get(url, status=400)
    assert 'failed' not in page.text


def test_a_path_that_is_not_utf8_is_400(app):
    # (WebTest itself cannot handle the cookie of such a URL: WebOb's own.)
    response = webob.Request.blank('/job/%ff').get_response(app.app)
    assert response.status_int == 400
    assert 'not valid UTF-8' in response.text


@pytest.mark.parametrize('url', ['/job/%C2%B2', '/job/99999999999999999999',
                                 '/job/123456789012345678901', '/job/0'])
def test_bad_job_ids_are_404(app, url):
    app.get(url, status=404)


def test_bad_job_ids_in_actions_are_404(app):
    app.get('/jobs')
    token = app.app.token(app.cookies[dashboard.COOKIE])
    for url in ('/job/%C2%B2/cancel', '/job/99999999999999999999/cancel'):
        app.post(url, {'csrf_token': token}, status=404)


def test_a_bad_cursor_says_what_is_wrong(app):
    page = app.get('/jobs', {'cursor': 'nonsense'}, status=400)
    assert 'cursor must be one that listJobs gave' in page.text


# -- workers ------------------------------------------------------------------

def test_the_workers_page_shows_records_and_marks_the_dead(app, db, ids):
    with db.transaction() as conn:
        service = _service(conn)
        service.registerWorker('alive', NOW - 50, 'host-a', 11, 2.0,
                               ('echo', 'fail'))
        service.workerSeen('alive', NOW - 1, jobs=(ids['running'],),
                           jobsDone=7, counters={'completed': 6, 'error': 1,
                                                 'claim conflicts': 2})
        service.registerWorker('gone', NOW - 500, 'host-b', 22, 2.0, ('echo',))
    page = app.get('/workers')
    rows = {tr['data-worker']: tr
            for tr in page.html.select('#workers tr.worker')}
    assert set(rows) == {'alive', 'gone'}
    assert rows['alive']['data-state'] == 'live'
    assert rows['gone']['data-state'] == 'dead'
    assert 'dead since 8 min 20 s ago' in rows['gone'].get_text(' ',
                                                                strip=True)
    alive = rows['alive']
    assert alive.select_one('.jobs-done').get_text() == '7'
    assert alive.find('a')['href'] == '/job/%d' % ids['running']
    assert alive.select_one('.tasks').get_text() == 'echo, fail'
    assert 'claim conflicts: 2' in alive.select_one('.counters').get_text()
    assert page.html.find(id='workers-summary').get_text().startswith(
        '1 live worker(s) of 2 recorded')
    assert 'id="live-workers"' in app.get('/').text


def test_a_service_without_workers(app):
    assert 'No worker has registered' in app.get('/workers').text


# -- metrics ------------------------------------------------------------------

def parse_metrics(text):
    from prometheus_client.parser import text_string_to_metric_families
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = \
                sample.value
    return found


def test_metrics_in_the_prometheus_format(app, db, ids):
    with db.transaction() as conn:
        service = _service(conn)
        service.registerWorker('w', NOW - 5, 'h', 1, 2.0, ('echo',))
        service.workerSeen('w', NOW - 1, jobs=(ids['running'],), jobsDone=3,
                           counters={'completed': 2, 'error': 1,
                                     'claim conflicts': 4,
                                     'storage outages': 1, 'note': 'text'})
    response = app.get('/metrics')
    assert response.content_type == 'text/plain'
    found = parse_metrics(response.text)
    assert found['zodbtasks_jobs', (('status', 'queued'), ('task', 'echo'))] \
        == 2
    assert found['zodbtasks_jobs', (('status', 'error'), ('task', 'crash'))] \
        == 1
    assert found['zodbtasks_queue_jobs', (('queue', 'default'),
                                          ('status', 'queued'))] == 2
    assert found['zodbtasks_live_workers', ()] == 1
    assert found['zodbtasks_workers', (('state', 'dead'),)] == 0
    assert found['zodbtasks_worker_runs_total', (
        ('outcome', 'completed'), ('worker', 'w'))] == 2
    assert found['zodbtasks_worker_conflicts_total', (
        ('step', 'claim'), ('worker', 'w'))] == 4
    assert found['zodbtasks_worker_storage_outages_total', (
        ('worker', 'w'),)] == 1
    assert found['zodbtasks_worker_jobs_in_hand', (('worker', 'w'),)] == 1
    assert found['zodbtasks_service_paused', ()] == 0
    # the failed job ran for 0 s (processNext gives one time to both ends)
    assert found['zodbtasks_run_duration_seconds', (
        ('quantile', '0.5'), ('task', 'crash'))] == 0
    # each app has a registry of its own: the global one stays empty
    from prometheus_client import REGISTRY
    assert REGISTRY.get_sample_value('zodbtasks_live_workers') is None


def test_metrics_durations_come_from_finished_jobs(timed):
    found = parse_metrics(timed.get('/metrics').text)
    assert found['zodbtasks_run_duration_seconds', (
        ('quantile', '0.95'), ('task', 'echo'))] == 10.0
    assert found['zodbtasks_run_duration_seconds', (
        ('quantile', '0.5'), ('task', 'echo'))] == 5.0
    assert found['zodbtasks_run_duration_runs', (('task', 'echo'),)] == 10


# -- authentication -----------------------------------------------------------

def basic(user, password):
    import base64
    return 'Basic ' + base64.b64encode(
        ('%s:%s' % (user, password)).encode()).decode()


def test_credentials_from_a_file(tmp_path):
    path = tmp_path / 'auth'
    path.write_text('# who may look\nalice:s3cret:with:colons\n\n'
                    'tok-123456\n')
    creds = auth.Credentials.from_file(str(path))
    assert creds.allows(basic('alice', 's3cret:with:colons'))
    assert not creds.allows(basic('alice', 's3cret'))
    assert not creds.allows(basic('bob', 's3cret:with:colons'))
    assert creds.allows('Bearer tok-123456')
    assert creds.allows(basic('anyone', 'tok-123456'))
    assert not creds.allows('Bearer tok-12345')
    assert not creds.allows('Basic !!!')
    assert not creds.allows('Digest x') and not creds.allows('')
    for text, message in [('', 'no user:password line and no token'),
                          ('# only\n', 'no user:password line'),
                          (':pw\n', 'line 1: expected user:password'),
                          ('bob:\n', 'line 1: expected user:password')]:
        path.write_text(text)
        with pytest.raises(auth.AuthFileError, match=message):
            auth.Credentials.from_file(str(path))
    with pytest.raises(auth.AuthFileError, match='cannot read'):
        auth.Credentials.from_file(str(tmp_path / 'missing'))


def test_with_auth_every_page_needs_a_login(db, ids):
    creds = auth.Credentials([('alice', 'pw')], ['tok'])
    app = webtest.TestApp(dashboard.make_app(db, PATH, auth=creds))
    for url in ('/', '/jobs', '/metrics', '/api/counts',
                '/static/dashboard.css', '/job/%d' % ids['queued']):
        response = app.get(url, status=401)
        assert response.headers['WWW-Authenticate'].startswith(
            'Basic realm="zodbtasks dashboard"')
    app.get('/', headers={'Authorization': basic('alice', 'nope')},
            status=401)
    app.get('/', headers={'Authorization': basic('alice', 'pw')}, status=200)
    app.get('/metrics', headers={'Authorization': 'Bearer tok'}, status=200)
    # without a login, no change either
    app.post('/job/%d/cancel' % ids['queued'], status=401)
    assert status(db, ids['queued']) == 'queued'


def test_loopback_addresses():
    assert all(map(auth.is_loopback, ['127.0.0.1', '127.1.2.3', '::1',
                                      '[::1]', 'localhost']))
    assert not any(map(auth.is_loopback, ['0.0.0.0', '', '::', '10.0.0.1',
                                          'example.com']))


def test_serving_beyond_loopback_needs_auth(db, ids, tmp_path, capsys,
                                            monkeypatch):
    with pytest.raises(dashboard.command.NeedsAuth, match='--auth'):
        dashboard.serve(db, PATH, host='0.0.0.0', port=0)
    path = str(tmp_path / 'data.fs')
    fs = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    populate(fs)
    fs.close()
    served = []
    monkeypatch.setattr(dashboard.command, 'serve',
                        lambda db, path, **kw: served.append(kw))
    assert dashboard.main(['--db', path, '--service', PATH,
                           '--host', '0.0.0.0']) == 1
    err = capsys.readouterr().err
    assert '--host 0.0.0.0 is not a loopback address: give --auth FILE' in err
    assert served == []
    secrets_file = tmp_path / 'users'
    secrets_file.write_text('alice:pw\n')
    secrets_file.chmod(0o600)
    assert dashboard.main(['--db', path, '--service', PATH, '--host',
                           '0.0.0.0', '--auth', str(secrets_file)]) == 0
    assert served[0]['auth'].allows(basic('alice', 'pw'))
    assert served[0]['host'] == '0.0.0.0'
    secrets_file.write_text('')
    assert dashboard.main(['--db', path, '--service', PATH,
                           '--auth', str(secrets_file)]) == 1
    assert 'no user:password line and no token' in capsys.readouterr().err
    assert len(served) == 1


# -- the command --------------------------------------------------------------

def test_the_command_checks_database_and_service(tmp_path, tasks, capsys,
                                                 monkeypatch):
    path = str(tmp_path / 'data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    populate(db)
    db.close()
    assert dashboard.main(['--db', path, '--service', 'app/missing']) == 1
    assert "nothing at /app/missing" in capsys.readouterr().err
    served = []
    monkeypatch.setattr(dashboard.command, 'serve',
                        lambda db, path, **kw: served.append((path, kw)))
    assert dashboard.main(['--db', 'file://' + path, '--service', PATH,
                           '--port', '9999']) == 0
    assert served == [(PATH, {'host': '127.0.0.1', 'port': 9999,
                              'allowed_hosts': None, 'poll_seconds': 5.0,
                              'auth': None})]
    assert dashboard.main(['--db', str(tmp_path / 'no' / 'such.fs'),
                           '--service', PATH]) == 1
    assert 'cannot open --db' in capsys.readouterr().err


def test_the_command_serves_behind_its_login(tmp_path):
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from zodbtasks._testing import freePort
    from zodbtasks._testing import waitFor
    path = str(tmp_path / 'data.fs')
    fs = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    with fs.transaction() as conn:
        conn.root()['tasks'] = zodbtasks.TaskService()
    fs.close()
    command = [sys.executable, '-m', 'zodbtasks.dashboard', '--db', path,
               '--service', 'tasks']
    refused = subprocess.run(command + ['--host', '0.0.0.0'], timeout=60,
                             capture_output=True, text=True)
    assert refused.returncode == 1
    assert 'is not a loopback address: give --auth FILE' in refused.stderr
    users = tmp_path / 'users'
    users.write_text('alice:pw\n')
    users.chmod(0o600)
    port = freePort()
    server = subprocess.Popen(command + ['--port', str(port), '--auth',
                                         str(users)],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = 'http://127.0.0.1:%d/' % port

    def answer(headers=None):
        try:
            return urllib.request.urlopen(urllib.request.Request(
                url, headers=headers or {}), timeout=5).status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return None
    try:
        assert waitFor(answer, 60, 'the dashboard to listen') == 401
        assert answer({'Authorization': basic('alice', 'no')}) == 401
        assert answer({'Authorization': basic('alice', 'pw')}) == 200
    finally:
        server.terminate()
        assert server.wait(30) == 0


# -- in a browser -------------------------------------------------------------

def _browser_missing():
    """Why the browser test cannot run here, or None."""
    try:
        import selenium  # noqa: F401
        import waitress  # noqa: F401
    except ImportError as error:
        return 'needs selenium and waitress: %s' % error
    for program in ('/usr/bin/chromium', '/usr/bin/chromedriver'):
        if not os.access(program, os.X_OK):
            return 'needs %s (apt-get install chromium chromium-driver)' % (
                program,)
    return None


@pytest.fixture
def browser(tmp_path):
    missing = _browser_missing()
    if missing:
        if REQUIRE_BROWSER:
            pytest.fail('ZODBTASKS_REQUIRE_BROWSER is set but the browser '
                        'test ' + missing)
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = '/usr/bin/chromium'
    for argument in ('--headless', '--no-sandbox', '--disable-gpu',
                     '--disable-dev-shm-usage', '--disable-background-networking',
                     '--disable-component-update', '--disable-sync',
                     '--no-first-run', '--window-size=1280,900',
                     '--user-data-dir=%s' % (tmp_path / 'chromium')):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service('/usr/bin/chromedriver'),
                              options=options)
    driver.set_page_load_timeout(15)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / 'chromium', ignore_errors=True)


class ServerThread(WaitressServer):
    """waitress serving an app on a free loopback port, started at once;
    its ``url`` ends with a slash."""

    def __init__(self, app):
        super().__init__(app)
        self.url += '/'
        self.start()


def gone(element):
    """A wait condition: ``element`` left the document (the page changed).

    While the new page replaces the old one, chromedriver may answer with a
    WebDriverException of its own instead of a stale-element error; either
    means the old page is gone.
    """
    from selenium.common.exceptions import WebDriverException

    def check(driver):
        try:
            element.is_enabled()
        except WebDriverException:
            return True
        return False
    return check


def test_in_chromium(tmp_path, tasks, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'data.fs')))
    server = None
    try:
        ids = populate(db)
        app = dashboard.make_app(db, PATH, poll_seconds=0.2,
                                 allowed_hosts=('127.0.0.1',))
        server = ServerThread(app)
        wait = WebDriverWait(browser, 10)
        browser.get(server.url + 'jobs')
        rows = browser.find_elements(By.CSS_SELECTOR, 'table.jobs tr[data-job]')
        assert {int(r.get_attribute('data-job')) for r in rows} == \
            set(ids.values())
        screenshot = os.environ.get('ZODBTASKS_DASHBOARD_SCREENSHOT')
        if screenshot:
            browser.save_screenshot(screenshot)

        # cancel a job with its button
        button = browser.find_element(
            By.CSS_SELECTOR, '#job-%d button.cancel' % ids['queued'])
        button.click()
        wait.until(gone(button))
        wait.until(ec.text_to_be_present_in_element(
            (By.CSS_SELECTOR, '#job-%d .status' % ids['queued']), 'cancelled'))
        assert status(db, ids['queued']) == 'cancelled'

        # the counts follow the database without a reload
        count = browser.find_element(By.CSS_SELECTOR,
                                     '[data-count="queued"]')
        before = int(count.text)
        browser.execute_script('window.notReloaded = true;')
        with db.transaction() as conn:
            _service(conn).add('echo', 'new')
            _service(conn).add('echo', 'newer')
        wait.until(ec.text_to_be_present_in_element(
            (By.CSS_SELECTOR, '[data-count="queued"]'), str(before + 2)))
        assert browser.execute_script('return window.notReloaded === true;')
        assert browser.find_element(By.ID, 'count-total').text == '8'
    finally:
        if server is not None:
            server.stop()
        db.close()



def test_the_overview_chart_and_a_bulk_retry_in_chromium(tmp_path, tasks,
                                                         browser):
    import time

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'data.fs')))
    server = None
    # The chart counts runs by the minutes between their end and the
    # request: each group ends about half a minute inside its minute, so
    # that it stays in one bar however long the page takes to ask (up to
    # 25 s).
    now = time.time()
    try:
        with db.transaction() as conn:
            conn.root()['app'] = app = PersistentMapping()
            app['tasks'] = service = zodbtasks.TaskService()
            for minute in (50, 20, 3):
                for n in range(minute // 10 + 1):
                    finish(service, 'echo', now - minute * 60 - 30 + n, 1.5)
            failed = [finish(service, 'crash', now - 90 - n, 0.5,
                             error='ZeroDivisionError') for n in range(3)]
        server = ServerThread(dashboard.make_app(
            db, PATH, poll_seconds=0, allowed_hosts=('127.0.0.1',)))
        wait = WebDriverWait(browser, 10)

        # the chart: server-side SVG, drawn with bars of their height
        browser.get(server.url)
        chart = browser.find_element(By.CSS_SELECTOR, '#throughput svg.chart')
        assert chart.size['width'] >= 600
        bars = browser.find_elements(By.CSS_SELECTOR, 'svg.chart rect.bar')
        assert len(bars) == 4        # three minutes with runs, one failed
        heights = sorted(round(b.size['height']) for b in bars)
        tallest = max(heights)
        assert tallest > 50 and all(h > 0 for h in heights)
        # 6 runs make the tallest bar; 3 failures half as tall
        failed_bar = browser.find_element(By.CSS_SELECTOR,
                                          'svg.chart rect.bar.failed')
        assert abs(failed_bar.size['height'] - tallest / 2) <= 1.5
        assert browser.find_element(By.CSS_SELECTOR, '#failures td').text \
            == 'crash'

        # a bulk retry: tick two failed jobs, press Retry
        browser.get(server.url + 'jobs?status=error')
        for jobid in failed[:2]:
            browser.find_element(
                By.CSS_SELECTOR, '#job-%d input.select' % jobid).click()
        button = browser.find_element(By.CSS_SELECTOR, '#bulk button.retry')
        button.click()
        wait.until(gone(button))
        wait.until(ec.presence_of_element_located((By.ID, 'bulk-done')))
        assert browser.find_element(By.TAG_NAME, 'h2').text == \
            'Retry: 2 job(s) changed'
        assert [status(db, jobid) for jobid in failed] == [
            'queued', 'queued', 'error']

        # "select all" ticks every job of the page
        browser.get(server.url + 'jobs?status=queued')
        browser.find_element(By.ID, 'select-all').click()
        boxes = browser.find_elements(By.CSS_SELECTOR, 'input.select')
        assert len(boxes) == 2 and all(b.is_selected() for b in boxes)
    finally:
        if server is not None:
            server.stop()
        db.close()


# -- with a real worker -------------------------------------------------------

@pytest.fixture
def zeo_with_jobs(tmp_path):
    """A ZEO server whose service (at ``tasks``) has three jobs a worker of
    tests/worker_tasks.py can run, and the ledger they write."""
    import ZEO

    from zodbtasks._testing import ZEOServer
    import worker_tasks
    worker_tasks.register()
    ledger = str(tmp_path / 'ledger')
    with ZEOServer(str(tmp_path / 'Data.fs')) as zeo:
        db = ZEO.DB(zeo.address)
        try:
            with db.transaction() as conn:
                conn.root()['tasks'] = service = zodbtasks.TaskService()
                for _ in range(3):
                    service.add('append_id', ledger)
            yield zeo, db
        finally:
            db.close()


def start_worker(workers, zeo):
    return workers.start('worker', '--db', zeo.uri, '--service', 'tasks',
                         '--tasks', 'worker_tasks', '--poll', '0.05',
                         '--heartbeat', '0.2')


def worker_env():
    here = os.path.dirname(os.path.abspath(__file__))
    return {'PYTHONPATH': os.pathsep.join(
        filter(None, [here, os.environ.get('PYTHONPATH')]))}


def test_metrics_and_workers_page_with_a_real_worker(tmp_path, zeo_with_jobs):
    from zodbtasks._testing import Workers
    from zodbtasks._testing import waitFor
    zeo, db = zeo_with_jobs
    app = webtest.TestApp(dashboard.make_app(db, 'tasks'))

    def metrics():
        return parse_metrics(app.get('/metrics').text)

    with Workers(str(tmp_path), env=worker_env()) as workers:
        worker = start_worker(workers, zeo)
        name = '%s:%d' % (socket.gethostname(), worker.pid)
        found = waitFor(
            lambda: (lambda m: m.get(('zodbtasks_worker_runs_total', (
                ('outcome', 'completed'), ('worker', name)))) == 3 and m)(
                metrics()), 60, 'the worker to record its three runs',
            interval=0.2)
        assert found['zodbtasks_live_workers', ()] == 1
        assert found['zodbtasks_jobs', (('status', 'completed'),
                                        ('task', 'append_id'))] == 3
        assert found['zodbtasks_run_duration_runs', (
            ('task', 'append_id'),)] == 3
        assert found['zodbtasks_run_duration_seconds', (
            ('quantile', '0.95'), ('task', 'append_id'))] < 30
        assert found['zodbtasks_worker_last_seen_timestamp_seconds', (
            ('worker', name),)] > 0
        page = app.get('/workers')
        [row] = page.html.select('#workers tr.worker')
        assert (row['data-pid'], row['data-state']) == (str(worker.pid),
                                                        'live')
        assert 'append_id' in row.select_one('.tasks').get_text()
        worker.kill()
        worker.wait(30)
    found = waitFor(lambda: (lambda m: m[('zodbtasks_live_workers', ())] == 0
                             and m)(metrics()), 30,
                    'the killed worker to be seen dead', interval=0.2)
    assert found['zodbtasks_workers', (('state', 'dead'),)] == 1


def test_the_workers_page_lists_a_worker_in_chromium(tmp_path, zeo_with_jobs,
                                                     browser):
    from selenium.webdriver.common.by import By

    from zodbtasks._testing import Workers
    from zodbtasks._testing import waitFor
    zeo, db = zeo_with_jobs
    server = ServerThread(dashboard.make_app(db, 'tasks', poll_seconds=0,
                                             allowed_hosts=('127.0.0.1',)))
    try:
        with Workers(str(tmp_path), env=worker_env()) as workers:
            worker = start_worker(workers, zeo)

            def listed():
                browser.get(server.url + 'workers')
                rows = browser.find_elements(By.CSS_SELECTOR,
                                             '#workers tr.worker')
                return [(r.get_attribute('data-pid'),
                         r.get_attribute('data-state'),
                         r.find_element(By.CSS_SELECTOR, '.jobs-done').text)
                        for r in rows]
            waitFor(lambda: listed() == [(str(worker.pid), 'live', '3')], 60,
                    'the worker on the workers page', interval=0.3)
            assert 'append_id' in browser.find_element(
                By.CSS_SELECTOR, '#workers .tasks').text
            worker.terminate()
            assert worker.wait(30) == 0
            waitFor(lambda: listed() == [(str(worker.pid), 'stopped', '3')],
                    30, 'the worker shown stopped', interval=0.3)
    finally:
        server.stop()
