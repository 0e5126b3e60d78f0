"""zodbtasks in a real Zope 5 instance, driven over HTTP.

The module builds an instance with ``mkwsgiinstance``, wires zodbtasks in
with a package-includes file and ``<product-config zodbtasks>``, keeps its
database in a ZEO server (so that ``zconsole`` scripts and workers can use it
while the server runs), starts ``runwsgi`` on 127.0.0.1 and stops it by pid.

Without Zope (the ``zope`` extra) the module skips, unless the variable
ZODBTASKS_REQUIRE_ZOPE is set, as CI does.
"""
import base64
import http.cookiejar
import inspect
import os
import re
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.parse
import urllib.request

import pytest

from zodbtasks._testing import LOOPBACK
from zodbtasks._testing import ZEOServer
from zodbtasks._testing import consoleScript
from zodbtasks._testing import freePort
from zodbtasks._testing import waitFor

try:
    import Zope2  # noqa: F401
    import Products.PythonScripts  # noqa: F401
except ImportError as error:
    if os.environ.get('ZODBTASKS_REQUIRE_ZOPE'):
        raise RuntimeError('ZODBTASKS_REQUIRE_ZOPE is set but Zope is not '
                           'installed (the zope extra): %s' % error)
    pytest.skip('Zope 5 is not installed (pip install zodbtasks[zope]): %s'
                % error, allow_module_level=True)

import ZEO  # noqa: E402
import transaction  # noqa: E402

import zodbtasks  # noqa: E402
from zodbtasks.zope import publish  # noqa: E402



def command(name):
    """A console script of the environment; a missing one fails the test."""
    path = consoleScript(name)
    assert path, 'no %s script beside %s or on PATH' % (name, sys.executable)
    return path


START = 90          # seconds for a server to start
PASSWORD = 'pw-for-tests'

TASKS_MODULE = '''
"""Tasks of the test instance, registered in its ZCML."""
import time

import zodbtasks
from AccessControl import getSecurityManager
from zope.component.hooks import getSite
from zope.globalrequest import getRequest


def _echo(input):
    return input


echo = zodbtasks.SimpleTask(_echo)


def whoami(service, jobid, input):
    """What a task sees of its Zope context."""
    site = getSite()
    request = getRequest()
    return {'user': getSecurityManager().getUser().getUserName(),
            'url': service.absolute_url(),
            'request': request is not None
            and request is getattr(service, 'REQUEST', None),
            'site': site.getId() if site is not None else None}


def slow(service, jobid, input):
    with open(input['started'], 'w'):
        pass
    time.sleep(input['seconds'])
    return 'finished after %s s' % input['seconds']


def refuse(event):
    """A site's own check of new jobs: it refuses one after the service
    has stored it, so that only an abort can take it back."""
    if event.job.input == 'refused by a subscriber':
        raise ValueError('the subscriber refuses job %d' % event.job.id)
'''

ZCML = '''<configure xmlns="http://namespaces.zope.org/zope">
  <include package="zodbtasks.zope" />
  <utility component="zope_test_tasks.echo"
           provides="zodbtasks.interfaces.ITask" name="echo" />
  <utility component="zope_test_tasks.whoami"
           provides="zodbtasks.interfaces.ITask" name="whoami" />
  <utility component="zope_test_tasks.slow"
           provides="zodbtasks.interfaces.ITask" name="slow" />
  <subscriber for="zodbtasks.interfaces.IJobQueued"
              handler="zope_test_tasks.refuse" />
</configure>
'''

SETUP = '''
import transaction
from zope.component import getGlobalSiteManager
from zope.component.interfaces import ISite
from zope.component.persistentregistry import PersistentComponents
from zope.interface import alsoProvides
from zodbtasks.zope import TaskService

app['tasks'] = TaskService()
app.manage_addFolder('site')
site = app.site
components = PersistentComponents('site')
components.__bases__ = (getGlobalSiteManager(),)
site.setSiteManager(components)
alsoProvides(site, ISite)
site['tasks'] = TaskService()
app['spare'] = TaskService()          # processed by a worker process only
users = app.acl_users
users._doAddUser('manager', PASSWORD, ['Manager'], [])
users._doAddUser('viewer', PASSWORD, [], [])
users._doAddUser('adder', PASSWORD, ['JobAdder'], [])
app._addRole('JobAdder')
app.manage_permission('zodbtasks: Add jobs', ['Manager', 'JobAdder'], 0)
app.manage_addProduct['PythonScripts'].manage_addPythonScript('tryit')
app.tryit.ZPythonScript_edit('which', SCRIPT)
transaction.commit()
'''

# What a Python Script may try; only 'registered' may work.
SCRIPT = '''
tasks = context.tasks
if which == 'registered':
    return tasks.add('echo', 'from a script')
if which == 'dotted':
    return tasks.add('os.system', 'touch ' + container.REQUEST['marker'])
if which == 'eval':
    return tasks.add('builtins.eval', '1 + 1')
if which == 'method':
    return tasks.add(context.manage_delObjects, ['tasks'])
if which == 'bound':
    return tasks.add(tasks.clean)
if which == 'run':
    return tasks.processNext()
if which == 'runClaimed':
    return tasks.runClaimed(1, 2)
if which == 'jobs':
    return len(tasks.jobs)
if which == 'setting':
    tasks.trustedModules = ['os']
    return 'set'
if which == 'factory':
    return str(tasks.processorFactory)
if which == 'processor':
    return tasks.startProcessing()
'''


class Instance:
    """A Zope 5 instance in ``path``; `start` runs its server."""

    def __init__(self, path, zeo):
        self.path = str(path)
        self.zeo = zeo
        self.port = freePort()
        self.process = None
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.join(self.path, 'lib')] + sys.path))
        self.env.pop('ZODBTASKS_AUTOSTART', None)

    def etc(self, name):
        return os.path.join(self.path, 'etc', name)

    def build(self):
        subprocess.run([command('mkwsgiinstance'), '-d', self.path,
                        '-u', 'admin:' + PASSWORD], check=True, timeout=120,
                       capture_output=True)
        os.makedirs(os.path.join(self.path, 'lib'))
        with open(os.path.join(self.path, 'lib', 'zope_test_tasks.py'),
                  'w') as f:
            f.write(TASKS_MODULE)
        os.makedirs(self.etc('package-includes'))
        with open(self.etc('package-includes/zodbtasks-configure.zcml'),
                  'w') as f:
            f.write(ZCML)
        self.writeConf('zope.conf', autostart='@tasks site@tasks',
                       **{'server-url': 'https://www.example.com',
                          'stop-grace': '20'})
        with open(self.etc('zope.ini')) as f:
            ini = f.read()
        ini = re.sub(r'(?m)^port = \d+$', 'port = %d' % self.port, ini)
        ini = re.sub(r'(?m)^host = .*$', 'host = %s' % LOOPBACK, ini)
        with open(self.etc('zope.ini'), 'w') as f:
            f.write(ini)
        self.zconsole(SETUP.replace('PASSWORD', repr(PASSWORD)).replace(
            'SCRIPT', repr(SCRIPT)))

    def writeConf(self, name, **settings):
        """A zope.conf on the ZEO server, with these product settings."""
        with open(self.etc('zope.conf')) as f:
            conf = f.read()
        conf = re.sub(r'<zodb_db main>.*?</zodb_db>', textwrap.dedent('''\
            <zodb_db main>
              <zeoclient>
                server %s:%d
                storage 1
                name zeostorage
                cache-size 20MB
              </zeoclient>
              mount-point /
            </zodb_db>''') % self.zeo.address, conf, flags=re.S)
        conf = re.sub(r'<product-config zodbtasks>.*?</product-config>\n',
                      '', conf, flags=re.S)
        conf += '\n<product-config zodbtasks>\n%s</product-config>\n' % ''.join(
            '  %s %s\n' % item for item in settings.items())
        with open(self.etc(name), 'w') as f:
            f.write(conf)
        return self.etc(name)

    def zconsole(self, script, env=None, conf='zope.conf'):
        path = os.path.join(self.path, 'script.py')
        with open(path, 'w') as f:
            f.write(script)
        result = subprocess.run(
            [command('zconsole'), 'run', self.etc(conf), path],
            env=dict(self.env, **(env or {})), capture_output=True, text=True,
            timeout=120, cwd=self.path)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    @property
    def log(self):
        with open(os.path.join(self.path, 'server.log')) as f:
            return f.read()

    def start(self):
        with open(os.path.join(self.path, 'server.log'), 'ab') as log:
            self.process = subprocess.Popen(
                [command('runwsgi'), self.etc('zope.ini')],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.path)
        waitFor(self._ready, START, 'the Zope server on port %d' % self.port,
                interval=0.2)
        return self

    def _ready(self):
        if self.process.poll() is not None:
            raise RuntimeError('the Zope server exited with %s:\n%s'
                               % (self.process.returncode, self.log))
        try:
            request('GET', self.url('/'), timeout=2)
            return True
        except OSError:
            return False

    def stop(self, signum=signal.SIGTERM, timeout=60):
        """Stop the server by its pid; return its exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise
        code, self.process = self.process.returncode, None
        return code

    def url(self, path):
        return 'http://%s:%d%s' % (LOOPBACK, self.port, path)


class Answer:
    def __init__(self, status, body, headers):
        self.status, self.body, self.headers = status, body, headers


def request(method, url, user=None, data=None, timeout=30, opener=None):
    """An HTTP request; returns an `Answer` whatever its status."""
    body = None
    if data is not None:
        body = urllib.parse.urlencode(data).encode('utf-8')
        if method == 'GET':
            url += '?' + body.decode('ascii')
            body = None
    req = urllib.request.Request(url, data=body, method=method)
    if user is not None:
        token = base64.b64encode(('%s:%s' % (user, PASSWORD)).encode())
        req.add_header('Authorization', 'Basic ' + token.decode('ascii'))
    try:
        with (opener or _plain).open(req, timeout=timeout) as answer:
            return Answer(answer.status, answer.read().decode('utf-8'),
                          answer.headers)
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.read().decode('utf-8', 'replace'),
                      error.headers)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kw):
        return None


_plain = urllib.request.build_opener(_NoRedirect)


@pytest.fixture(scope='module')
def zeo(tmp_path_factory):
    with ZEOServer(str(tmp_path_factory.mktemp('zeo') / 'Data.fs')) as zeo:
        yield zeo


@pytest.fixture(scope='module')
def instance(tmp_path_factory, zeo):
    instance = Instance(tmp_path_factory.mktemp('zope') / 'instance', zeo)
    instance.build()
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope='module')
def db(zeo):
    # server_sync: every transaction of the test begins with a round trip
    # to the server, so that it sees what the Zope server committed.
    database = ZEO.DB(zeo.address, server_sync=True)
    yield database
    database.close()


class Reader:
    """Look at the database from the test, in a fresh transaction."""

    def __init__(self, db):
        self.db = db

    def __call__(self, func):
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            tm.begin()
            return func(conn.root()['Application'])
        finally:
            tm.abort()
            conn.close()

    def last(self):
        self.db.storage.sync()
        return self.db.lastTransaction()


@pytest.fixture(scope='module')
def read(db):
    return Reader(db)


def wait_for_job(read, jobid, where='tasks', timeout=60):
    def look(app):
        job = app.unrestrictedTraverse(where).jobs.get(jobid)
        if job is not None and job.status in zodbtasks.interfaces.FINISHED:
            return (job.status, job.output, job.error)
        return None

    def finished():
        return read(look)
    return waitFor(finished, timeout, 'job %s finishing' % jobid, 0.1)


# -- the service's methods over HTTP -----------------------------------------

def public_methods():
    """Every public method of the core service."""
    return sorted(name for name, value in inspect.getmembers(
        zodbtasks.TaskService) if not name.startswith('_')
        and inspect.isfunction(value))


def permitted_user(name):
    """Who may call a method: None for the workers' methods (private)."""
    adding = {'add', 'addCronJob', 'getAvailableTasks', 'getStatus',
              'getResult', 'getError'}
    if name in adding:
        return 'adder'
    if name in publish.CHANGING or name in publish.READING:
        return 'manager'
    return None


def idle(read):
    """Wait until no job of the instance waits or runs."""
    def settled(app):
        return all(job.status in zodbtasks.interfaces.FINISHED
                   + ('start later',) for where in ('tasks', 'site/tasks')
                   for job in app.unrestrictedTraverse(where).jobs.values())
    waitFor(lambda: read(settled), 60, 'the jobs finishing', 0.1)


# Arguments that let each method get past its checks where that is easy.
ARGUMENTS = {
    'add': {'task': 'echo', 'input': 'over HTTP'},
    'addCronJob': {'task': 'echo', 'minute:list:int': '5',
                   'startLater:boolean': '1'},
    'getStatus': {'jobid:int': 'JOB'}, 'getResult': {'jobid:int': 'JOB'},
    'getError': {'jobid:int': 'JOB'}, 'cancel': {'jobid:int': 'JOB'},
    'retry': {'jobid:int': 'JOB'}, 'isPaused': {},
    # Keeps the completed job, which the methods after it look up.
    'clean': {'status': 'cancelled'},
}

REFUSED = (401, 403, 404, 405)


def arguments(name, jobid):
    return {k: str(jobid) if v == 'JOB' else v
            for k, v in ARGUMENTS.get(name, {}).items()}


def test_every_method_is_refused_to_anonymous_and_to_users_without_it(
        instance, read):
    methods = public_methods()
    assert {'add', 'pause', 'stopProcessing', 'runClaimed'} <= set(methods)
    idle(read)
    before = read.last()
    for name in methods:
        for user in (None, 'viewer') + {
                'manager': ('adder',),
                None: ('adder', 'manager')}.get(permitted_user(name), ()):
            for method in ('GET', 'POST'):
                answer = request(method, instance.url('/tasks/' + name),
                                 user, arguments(name, 1))
                assert answer.status in REFUSED, (name, user, method,
                                                  answer.status)
    assert read.last() == before            # nothing was committed
    assert not read(lambda app: app.tasks.paused)
    answer = request('GET', instance.url('/tasks/isProcessing'), 'manager')
    assert (answer.status, answer.body) == (200, 'True')


def test_every_method_works_for_a_user_with_its_permission_by_post(
        instance, read):
    jobid = int(request('POST', instance.url('/tasks/add'), 'adder',
                        ARGUMENTS['add']).body)
    assert wait_for_job(read, jobid)[:2] == ('completed', 'over HTTP')
    # Pause first, so that the methods that claim find nothing to claim;
    # start processing again last.
    methods = [m for m in public_methods() if permitted_user(m)]
    first, last = ['pause'], ['resume', 'startProcessing']
    order = first + [m for m in methods if m not in first + last] + last
    try:
        call_each(instance, read, order, jobid)
    finally:
        for name in last:
            request('POST', instance.url('/tasks/' + name), 'manager')
    assert not read(lambda app: app.tasks.paused)
    answer = request('GET', instance.url('/tasks/isProcessing'), 'manager')
    assert answer.body == 'True'


def call_each(instance, read, order, jobid):
    for name in order:
        user = permitted_user(name)
        data = arguments(name, jobid)
        answer = request('POST', instance.url('/tasks/' + name), user, data)
        # Reached: it answers, or refuses what it was given (400), but
        # does not fail.
        assert answer.status not in REFUSED and answer.status < 500, (
            name, answer.status, answer.body[:300])
        if name in publish.CHANGING:
            refused = request('GET', instance.url('/tasks/' + name), user,
                              data)
            assert refused.status == 405, (name, refused.status)
        else:
            answer = request('GET', instance.url('/tasks/' + name), user,
                             data)
            assert answer.status not in REFUSED, (name, answer.status)
        if name == 'pause':
            assert read(lambda app: app.tasks.paused)
        if name == 'stopProcessing':
            answer = request('GET', instance.url('/tasks/isProcessing'),
                             'manager')
            # Zope answers a false result with an empty page.
            assert (answer.status, answer.body) == (204, '')


def test_settings_and_data_are_not_reachable_by_url(instance):
    for name in ('jobs', 'trustedModules', 'processorFactory', 'clock',
                 'processorArguments', '_queue', 'leaseSeconds'):
        for method in ('GET', 'POST'):
            answer = request(method, instance.url('/tasks/' + name),
                             'manager')
            assert answer.status in (403, 404), (name, answer.status)


# -- refused calls -------------------------------------------------------------

MISSING = 999999999     # no job has this id: ids are larger and never reused

# What the service refuses, by URL: (HTTP method, service method, form,
# status, the reason the page gives, HTML-escaped).
REFUSED_CALLS = [
    ('POST', 'add', {'task': 'no-such-task'}, 400,
     'no task is registered under the name &#x27;no-such-task&#x27;'),
    ('POST', 'add', {'task': '<b>bold</b>'}, 400,
     'the name &#x27;&lt;b&gt;bold&lt;/b&gt;&#x27;'),
    ('POST', 'add', {'task': 'echo', 'priority:int': '99'}, 400,
     'priority must be a whole number from 0 (lowest) to 9 (highest), '
     'not 99'),
    ('POST', 'add', {'task': 'echo', 'input': 'refused by a subscriber'},
     400, 'the subscriber refuses job '),
    ('POST', 'addCronJob', {'task': 'echo', 'cron': '61 * * * *'}, 400,
     'cron expression &#x27;61 * * * *&#x27;: minute value 61 is out of '
     'range'),
    ('POST', 'addCronJob', {'task': 'echo', 'cron': '* * * * *',
                            'timezone': 'No/Where'}, 400,
     'unknown timezone &#x27;No/Where&#x27;'),
    ('POST', 'addCronJob', {'task': 'echo', 'minute:list:int': '5',
                            'delay:float': 'nan'}, 400,
     'delay must be a finite number of seconds, from 0 up to 3155760000 '
     '(100 years), not nan'),
    ('POST', 'addCronJob', {'task': 'echo', 'minute:list:int': '5',
                            'delay:float': '-1'}, 400, 'not -1.0'),
    ('POST', 'addCronJob', {'task': 'echo', 'minute:list:int': '5',
                            'delay': '60'}, 400,
     'delay must be a number of seconds (int or float), not &#x27;60&#x27;'),
    ('POST', 'cancel', {'jobid:int': str(MISSING)}, 404,
     'no job with id %d in this service' % MISSING),
    ('POST', 'remove', {'jobid:int': str(MISSING)}, 404,
     'no job with id %d' % MISSING),
    ('POST', 'pause', {'jobid:int': str(MISSING)}, 404,
     'no job with id %d' % MISSING),
    ('GET', 'getStatus', {'jobid:int': str(MISSING)}, 404,
     'no job with id %d' % MISSING),
    ('GET', 'getResult', {'jobid': 'abc'}, 400,
     'a job id is a whole number, not &#x27;abc&#x27; (send it as '
     'jobid:int)'),
    ('POST', 'retry', {'jobid': '<i>1</i>'}, 400,
     'not &#x27;&lt;i&gt;1&lt;/i&gt;&#x27;'),
    ('POST', 'retry', {'jobid:int': 'COMPLETED'}, 400,
     'only a failed, cancelled or retrying job can be retried'),
    ('POST', 'clean', {'status': 'bogus'}, 400,
     '&#x27;bogus&#x27; is not one of cancelled, error, completed'),
    ('GET', 'countJobs', {'status': 'bogus'}, 400,
     'status must be one of queued'),
    ('GET', 'upcomingJobs', {'limit': '5'}, 400,
     'limit must be a whole number, 0 or more, not &#x27;5&#x27;'),
]


def test_a_refused_call_answers_400_or_404_with_its_reason_and_no_trace(
        instance, read):
    completed = int(request('POST', instance.url('/tasks/add'), 'adder',
                            {'task': 'echo', 'input': 'done'}).body)
    wait_for_job(read, completed)
    idle(read)
    before = read.last()
    count = read(lambda app: len(app.tasks.jobs))
    for method, name, data, status, reason in REFUSED_CALLS:
        data = {k: str(completed) if v == 'COMPLETED' else v
                for k, v in data.items()}
        answer = request(method, instance.url('/tasks/' + name), 'manager',
                         data)
        where = (method, name, data, answer.status, answer.body[:2000])
        assert answer.status == status, where
        assert reason in answer.body, where
        assert answer.headers['Content-Type'].startswith('text/html'), where
        assert 'Traceback' not in answer.body, where
        assert '<b>bold' not in answer.body and '<i>1' not in answer.body
    # The job the subscriber refused had been stored: the publisher took
    # it back with the rest of the transaction.
    assert read.last() == before
    assert read(lambda app: len(app.tasks.jobs)) == count
    # The same calls, right, pass: the refusals were not of the methods.
    jobid = int(request('POST', instance.url('/tasks/addCronJob'), 'adder',
                        {'task': 'echo', 'cron': '0 3 * * *',
                         'timezone': 'Europe/Berlin', 'priority:int': '7',
                         'startLater:boolean': '1'}).body)
    assert read(lambda app: (app.tasks.jobs[jobid].status,
                             app.tasks.jobs[jobid].priority)) == (
        'start later', 7)
    answer = request('GET', instance.url('/tasks/getStatus'), 'adder',
                     {'jobid:int': str(jobid)})
    assert (answer.status, answer.body) == (200, 'start later')
    answer = request('POST', instance.url('/tasks/cancel'), 'manager',
                     {'jobid:int': str(jobid)})
    assert answer.status in (200, 204), answer.status
    assert read(lambda app: app.tasks.jobs[jobid].status) == 'cancelled'


def test_the_jobs_tab_refuses_bad_requests_with_its_own_pages(instance,
                                                              read):
    # The dashboard behind the Jobs tab answers its own errors.
    before = read.last()
    for path in ('/job/%d' % MISSING, '/job/abc', '/job/%3Cb%3E'):
        answer = request('GET', instance.url('/tasks/manage_jobs' + path),
                         'manager')
        assert answer.status == 404, (path, answer.status)
        assert 'Traceback' not in answer.body and '<b>' not in answer.body
    answer = request('GET', instance.url('/tasks/manage_jobs/jobs'),
                     'manager', {'status': '<b>bogus</b>'})
    assert answer.status == 400
    assert '&lt;b&gt;bogus' in answer.body and '<b>bogus' not in answer.body
    assert read.last() == before


# -- a Zope object -------------------------------------------------------------

def test_the_zmi_lists_the_service_and_adds_one_from_its_add_menu(
        instance, read):
    listing = request('GET', instance.url('/manage_main'), 'manager')
    assert listing.status == 200
    assert 'zodbtasks Task Service' in listing.body     # in the Add menu
    assert 'Broken' not in listing.body
    form = request('GET', instance.url(
        '/manage_addProduct/zodbtasks.zope/manage_addTaskServiceForm'),
        'manager')
    assert form.status == 200 and 'name="id"' in form.body
    refused = request('POST', instance.url(
        '/manage_addProduct/zodbtasks.zope/manage_addTaskService'), 'adder',
        {'id': 'sneaky'})
    assert refused.status == 401
    added = request('POST', instance.url(
        '/manage_addProduct/zodbtasks.zope/manage_addTaskService'),
        'manager', {'id': 'added', 'title': 'Added in the ZMI'})
    assert added.status in (200, 302)
    again = request('POST', instance.url(
        '/manage_addProduct/zodbtasks.zope/manage_addTaskService'),
        'manager', {'id': 'added'})
    assert again.status == 400                      # Zope's own check
    assert 'The id &quot;added&quot; is invalid' in again.body or \
        'The id "added" is invalid' in again.body
    meta = read(lambda app: (app.added.meta_type, app.added.title,
                             app.added.getId(), app.tasks.getId()))
    assert meta == ('zodbtasks Task Service', 'Added in the ZMI', 'added',
                    'tasks')
    listing = request('GET', instance.url('/manage_main'), 'manager')
    assert re.search(r'added.*Added in the ZMI', listing.body, re.S)


def test_the_jobs_tab_is_the_dashboard_under_zope_authentication(
        instance, read):
    jobid = int(request('POST', instance.url('/tasks/add'), 'adder',
                        {'task': 'echo', 'input': 'shown'}).body)
    wait_for_job(read, jobid)
    assert request('GET', instance.url('/tasks/manage_jobs'),
                   None).status == 401
    assert request('GET', instance.url('/tasks/manage_jobs'),
                   'adder').status == 401
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
    page = request('GET', instance.url('/tasks/manage_jobs/'), 'manager',
                   opener=opener)
    assert page.status == 200
    assert '/tasks/manage_jobs/job/%d' % jobid in page.body
    job = request('GET', instance.url('/tasks/manage_jobs/job/%d' % jobid),
                  'manager', opener=opener)
    assert job.status == 200 and "'shown'" in job.body
    try:
        check_dashboard_actions(instance, read, page, opener)
    finally:
        request('POST', instance.url('/tasks/resume'), 'manager')


def check_dashboard_actions(instance, read, page, opener):
    # The dashboard's own rules hold: a change needs POST and its token.
    token = re.search(r'name="csrf_token" value="(\w+)"', page.body).group(1)
    assert request('POST', instance.url(
        '/tasks/manage_jobs/service/pause'), 'manager', {'csrf_token': 'x'},
        opener=opener).status == 403
    assert not read(lambda app: app.tasks.paused)
    paused = request('POST', instance.url('/tasks/manage_jobs/service/pause'),
                     'manager', {'csrf_token': token}, opener=opener)
    assert paused.status == 303
    assert read(lambda app: app.tasks.paused)
    resumed = request('POST', instance.url(
        '/tasks/manage_jobs/service/resume'), 'manager',
        {'csrf_token': token}, opener=opener)
    assert resumed.status == 303
    assert not read(lambda app: app.tasks.paused)


# -- what tasks may be, and in what context they run ---------------------------

def test_a_url_cannot_add_a_dotted_name_task(instance, read, tmp_path):
    marker = tmp_path / 'owned'
    idle(read)
    before = read.last()
    for name in ('os.system', 'subprocess.call', 'builtins.eval'):
        answer = request('POST', instance.url('/tasks/add'), 'manager',
                         {'task': name, 'input': 'touch %s' % marker})
        assert answer.status == 400
        assert ('&#x27;%s&#x27; is not a registered task' % name
                in answer.body), answer.body
        assert 'register the task, or add its module to trustedModules' \
            in answer.body
    assert read.last() == before
    assert not marker.exists()


def test_a_python_script_can_add_registered_tasks_and_nothing_else(
        instance, read, tmp_path):
    marker = tmp_path / 'owned'
    answer = request('POST', instance.url('/tryit'), 'adder',
                     {'which': 'registered'})
    assert answer.status == 200
    assert wait_for_job(read, int(answer.body))[:2] == (
        'completed', 'from a script')
    idle(read)
    before = read.last()
    for which in ('dotted', 'eval', 'method', 'bound', 'run', 'runClaimed',
                  'jobs', 'setting', 'factory', 'processor'):
        answer = request('POST', instance.url('/tryit'), 'adder',
                         {'which': which, 'marker': str(marker)})
        assert answer.status in (401, 403, 500), (which, answer.status)
    assert read.last() == before
    assert not marker.exists()
    assert read(lambda app: app.tasks.trustedModules) == ()


def test_tasks_run_as_their_user_in_their_site_with_real_urls(instance,
                                                              read):
    jobid = int(request('POST', instance.url('/tasks/add'), 'adder',
                        {'task': 'whoami'}).body)
    status, output, error = wait_for_job(read, jobid)
    assert (status, error) == ('completed', None)
    assert output == {'user': 'adder', 'url': 'https://www.example.com/tasks',
                      'request': True, 'site': None}
    jobid = int(request('POST', instance.url('/site/tasks/add'), 'manager',
                        {'task': 'whoami'}).body)
    status, output, error = wait_for_job(read, jobid, 'site/tasks')
    assert output == {'user': 'manager',
                      'url': 'https://www.example.com/site/tasks',
                      'request': True, 'site': 'site'}


# -- scripts, workers and ZEO ----------------------------------------------------

ADD_FROM_SCRIPT = '''
import transaction
jobid = app.tasks.add('whoami')
transaction.commit()
print('JOB', jobid, app.tasks.isProcessing())
'''


def test_zconsole_adds_jobs_over_zeo_and_the_server_runs_them(instance,
                                                              read):
    result = instance.zconsole(ADD_FROM_SCRIPT)
    jobid, processing = re.search(r'JOB (\d+) (\w+)', result.stdout).groups()
    assert processing == 'False'        # the script did not become a worker
    status, output, error = wait_for_job(read, int(jobid))
    # zconsole runs scripts as Zope's system user: so does their job.
    assert output['user'] == 'System Processes'
    assert output['url'] == 'https://www.example.com/tasks'


def test_scripts_autostart_only_when_told_to(instance, tmp_path):
    instance.writeConf('scripts.conf', autostart='@spare',
                       **{'autostart-scripts': 'on'})
    check = "print('PROCESSING', app.spare.isProcessing())\n"
    assert 'PROCESSING True' in instance.zconsole(check,
                                                  conf='scripts.conf').stdout
    assert 'PROCESSING False' in instance.zconsole(
        check, conf='scripts.conf',
        env={'ZODBTASKS_AUTOSTART': 'off'}).stdout


def test_a_worker_with_zope_conf_knows_the_zcml_tasks_and_runs_as_run_as(
        instance, read, zeo):
    conf = instance.writeConf('worker.conf', autostart='@spare',
                              **{'run-as': 'viewer',
                                 'server-url': 'http://intranet:8080'})
    result = instance.zconsole('''
import transaction
print('JOB', app.spare.add('whoami'))
transaction.commit()
''')
    jobid = int(re.search(r'JOB (\d+)', result.stdout).group(1))
    worker = subprocess.run(
        [command('zodbtasks'), 'worker', '--zope-conf', conf,
         '--db', zeo.uri, '--service', 'Application/spare', '--until-idle',
         '--poll', '0.1'],
        env=instance.env, capture_output=True, text=True, timeout=120,
        cwd=instance.path)
    assert worker.returncode == 0, worker.stderr
    assert 'autostart: processing' not in worker.stderr
    status, output, error = wait_for_job(read, jobid, 'spare', 5)
    assert (status, error) == ('completed', None)
    assert output == {'user': 'viewer', 'url': 'http://intranet:8080/spare',
                      'request': True, 'site': None}


# -- stopping ------------------------------------------------------------------

@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_the_job_in_hand_finishes_and_is_recorded_when_the_server_stops(
        instance, read, tmp_path, signum):
    started = tmp_path / 'started'
    result = instance.zconsole('''
import transaction
print('JOB', app.tasks.add('slow', {'started': %r, 'seconds': 2}))
transaction.commit()
''' % str(started))
    jobid = int(re.search(r'JOB (\d+)', result.stdout).group(1))
    waitFor(started.exists, 60, 'the slow job starting', 0.05)
    code = instance.stop(signum, timeout=60)
    assert code in (-signum, 0, 1, 128 + signum), code
    job = read(lambda app: (app.tasks.jobs[jobid].status,
                            app.tasks.jobs[jobid].output,
                            app.tasks.jobs[jobid].error))
    assert job == (
        'completed', 'finished after 2 s', None)
    log = instance.log
    name = signal.Signals(signum).name
    assert ('%s: stopping the processors of /Application/tasks, '
            '/Application/site/tasks' % name) in log or (
        '%s: stopping the processors of /Application/site/tasks, '
        '/Application/tasks' % name) in log
    assert 'zodbtasks: processors stopped' in log
    assert "'NoneType' object has no attribute" not in log
    instance.start()         # for the next test, and the teardown
