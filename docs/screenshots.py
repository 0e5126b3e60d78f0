"""Make the screenshots of docs/dashboard.rst.

    python docs/screenshots.py [DIRECTORY]

It fills a database in memory with an hour of a made-up queue (jobs that
finished minute by minute, failures, a running job, a cron job, workers
live and dead), serves the dashboard on a free loopback port and has
headless Chromium (/usr/bin/chromium and /usr/bin/chromedriver, through
selenium) save one PNG per page, 1200 pixels wide, into DIRECTORY (by
default the directory of this script). The tests drive the same browser
(tests/test_dashboard.py).
"""
import os
import random
import sys
import tempfile
import threading
import time

import transaction
import ZODB
import ZODB.MappingStorage
import zope.component

import zodbtasks
from zodbtasks.dashboard import make_app

WIDTH = 1200
MAX_HEIGHT = 1600
TASKS = {'send_email': 0.4, 'resize_image': 2.5, 'sync_crm': 9.0,
         'nightly_report': 95.0}
PAGES = [('dashboard-overview.png', ''),
         ('dashboard-jobs.png', 'jobs?limit=20'),
         ('dashboard-job.png', 'job/{failed}'),
         ('dashboard-workers.png', 'workers')]


def register_tasks():
    for name in TASKS:
        zope.component.provideUtility(zodbtasks.SimpleTask(str), name=name)


def finished(service, task, started, took, error=None, worker='web-1:812'):
    """A job of ``task`` that ran from ``started`` for ``took`` seconds."""
    jobid = service.add(task, {'n': random.randrange(1000)},
                        now=started - random.uniform(0, 5))
    claimed = service.claimNextJob(now=started, worker=worker, lease=600)
    assert claimed == jobid, (claimed, jobid)
    token = service.jobs[jobid].lease.token
    outcome = service.runClaimed(jobid, token, now=started)
    outcome.completed = started + took
    if error is not None:
        outcome.failed = True
        outcome.output = None
        outcome.error, outcome.traceback = error, (
            'Traceback (most recent call last):\n'
            '  File "app/crm.py", line 42, in sync\n'
            '    raise ConnectionError(%r)\n%s\n' % (error, error))
    service.recordOutcome(jobid, token, outcome)
    return jobid


def populate(service, now):
    """An hour of a made-up queue, ending at ``now``; the ids worth a look."""
    rng = random.Random(12)
    random.seed(12)
    ids = {}
    for minute in range(60, 0, -1):
        busy = 3 + int(4 * abs(((minute % 20) - 10) / 10))
        for n in range(busy):
            task = rng.choice(['send_email'] * 5 + ['resize_image'] * 3
                              + ['sync_crm'])
            took = TASKS[task] * rng.uniform(0.5, 1.8)
            started = now - minute * 60 + n * 7
            error = None
            if task == 'sync_crm' and rng.random() < 0.35:
                error = 'ConnectionError: crm.example.com timed out'
            jobid = finished(service, task, started, took, error)
            if error:
                ids['failed'] = jobid
    finished(service, 'nightly_report', now - 3000, 118.0, worker='batch-1:77')
    running = service.add('nightly_report', 'Q4', now=now - 200)
    service.claimNextJob(now=now - 190, worker='batch-1:77', lease=600)
    service.jobs[running].progress = (0.4, 'page 12 of 30')
    for n in range(5):
        service.add('send_email', {'to': 'user%d@example.com' % n},
                    now=now - 10 + n)
    service.addCronJob('sync_crm', cron='*/15 * * * *',
                       timezone='Europe/Paris', now=now - 4000)
    service.add('resize_image', 'big.tiff', now=now - 30, startLater=True)
    register_workers(service, now, running)
    return ids


def register_workers(service, now, running):
    for name, host, pid, seen, jobs, counters in [
            ('web-1:812', 'web-1', 812, now - 1, (),
             {'completed': 402, 'error': 21, 'claim conflicts': 3}),
            ('batch-1:77', 'batch-1', 77, now - 2, (running,),
             {'completed': 2, 'heartbeat conflicts': 1}),
            ('web-2:1290', 'web-2', 1290, now - 900, (),
             {'completed': 57, 'lost': 1})]:
        service.registerWorker(name, now - 3700, host, pid, 5.0,
                               sorted(TASKS))
        service.workerSeen(name, seen, jobs=jobs, jobsDone=sum(
            v for k, v in counters.items() if 'conflicts' not in k),
            counters=counters)


class Server:
    """waitress serving ``app`` on a free loopback port, in a thread."""

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
            pass

    def stop(self):
        from waitress import wasyncore
        self.server.task_dispatcher.shutdown()
        wasyncore.close_all(self.server._map)
        self.thread.join(10)


def browser(profile):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = '/usr/bin/chromium'
    for argument in ('--headless', '--no-sandbox', '--disable-gpu',
                     '--disable-dev-shm-usage', '--hide-scrollbars',
                     '--no-first-run', '--window-size=%d,900' % WIDTH,
                     '--user-data-dir=%s' % profile):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service('/usr/bin/chromedriver'),
                            options=options)


def shoot(driver, url, path):
    driver.set_window_size(WIDTH, 900)
    driver.get(url)
    height = driver.execute_script(
        'return document.documentElement.scrollHeight;')
    driver.set_window_size(WIDTH, min(max(height, 600), MAX_HEIGHT))
    driver.save_screenshot(path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = argv[0] if argv else os.path.dirname(os.path.abspath(__file__))
    register_tasks()
    db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    now = time.time()
    with transaction.manager:
        conn = db.open()
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        ids = populate(service, now)
    conn.close()
    server = Server(make_app(db, 'tasks', poll_seconds=0,
                             allowed_hosts=('127.0.0.1',)))
    try:
        with tempfile.TemporaryDirectory() as profile:
            driver = browser(profile)
            try:
                for name, page in PAGES:
                    path = os.path.join(out, name)
                    shoot(driver, server.url + page.format(**ids), path)
                    print(path)
            finally:
                driver.quit()
    finally:
        server.stop()
        db.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
