"""The web dashboard: WSGI-level tests, and one run in headless Chromium."""
import os
import re
import shutil
import threading

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


# -- reading -------------------------------------------------------------------

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
    js = app.get('/static/dashboard.js')
    assert js.content_type == 'application/javascript'
    assert '/api/counts' in response.text and 'fetch(' in js.text


# -- changing ------------------------------------------------------------------

def test_a_post_without_a_good_token_is_refused_and_changes_nothing(app, ids,
                                                                    db):
    url = '/job/%d/cancel' % ids['queued']
    app.post(url, status=403)                         # no cookie, no token
    page = app.get('/')                               # now with a session
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


# -- the command ---------------------------------------------------------------

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


# -- in a browser ----------------------------------------------------------------

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


class ServerThread:
    """waitress serving an app on a free loopback port, in a thread."""

    def __init__(self, app):
        from waitress.server import create_server
        self.server = create_server(app, host='127.0.0.1', port=0, threads=2)
        self.url = 'http://127.0.0.1:%s/' % self.server.effective_port
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.server.run()
        except (OSError, ValueError):
            pass                      # closed under the loop by stop()

    def stop(self):
        from waitress import wasyncore
        self.server.task_dispatcher.shutdown()
        wasyncore.close_all(self.server._map)
        self.thread.join(10)


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

