"""The dashboard's WSGI application: routing, sessions, checks and pages.

Every request opens its own connection and transaction: pages read and
abort, actions commit if they succeed. Pages are Chameleon page templates
(``templates/*.pt``), which escape every value unless told otherwise; no
template here is told otherwise.
"""
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
import urllib.parse

import transaction
import webob
from chameleon import PageTemplateLoader
from transaction.interfaces import TransientError

from zodbtasks import interfaces
from zodbtasks.dashboard import jobinfo
from zodbtasks.dashboard import stats
from zodbtasks.dashboard.auth import REALM
from zodbtasks.display import duration
from zodbtasks.display import in_zone
from zodbtasks.display import moment
from zodbtasks.display import user_traceback
from zodbtasks.job import CronJob
from zodbtasks.queues import check_name as check_queue_name
from zodbtasks.paths import splitPath
from zodbtasks.paths import traverse

log = logging.getLogger('zodbtasks.dashboard')

HERE = os.path.dirname(os.path.abspath(__file__))

#: The statuses in the order the dashboard shows them: running, waiting,
#: then done (the order of the service's listing).
STATUS_ORDER = interfaces.LISTING_ORDER

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Most jobs one bulk action may change.
MAX_BULK = 1000
COOKIE = 'zodbtasks_dashboard'
TOKEN_FIELD = 'csrf_token'
_SHOWN_REPR = 2000   # characters of a job's input or output shown
_SHOWN_KEYS = 50     # keys of a job's data (context.data) shown
_SHOWN_LOG = 200     # lines of a job's log shown (the latest)
_ID_DIGITS = 20
_LIST_PARAMS = ('status', 'task', 'limit', 'cursor', 'id')

_SECURITY_HEADERS = {
    'Content-Security-Policy': (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"),
    'X-Frame-Options': 'DENY',
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'same-origin',
}

STATIC = {
    'dashboard.js': 'application/javascript',
    'dashboard.css': 'text/css',
}

TEMPLATES = PageTemplateLoader(os.path.join(HERE, 'templates'), '.pt')


class HTTPError(Exception):
    """End a request with an error page."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _traverse(root, keys):
    """The service at ``keys``; LookupError says what is wrong."""
    try:
        obj = traverse(root, keys)
    except KeyError:
        raise LookupError('nothing at /%s in the database'
                          % '/'.join(keys)) from None
    if not interfaces.ITaskService.providedBy(obj):
        raise LookupError('/%s is a %s, not a task service'
                          % ('/'.join(keys), type(obj).__name__))
    return obj


def statusCounts(counts):
    """{status: number of jobs}, every status, from ``jobCounts()``."""
    found = dict.fromkeys(STATUS_ORDER, 0)
    for (status, task), n in counts.items():
        found[status] = found.get(status, 0) + n
    return found


def shortRepr(value):
    """``repr(value)``, cut to a length a page can show."""
    try:
        text = repr(value)
    except Exception as error:   # a broken __repr__ must not break the page
        text = '(no repr: %s)' % type(error).__name__
    if len(text) > _SHOWN_REPR:
        text = text[:_SHOWN_REPR] + '... (%d characters)' % len(text)
    return text


def statusClass(status):
    return 'status status-' + ''.join(c if c.isalnum() else '-'
                                      for c in str(status))


def _wholeNumber(text, name, low, high):
    """``text`` as an int in [low, high]; HTTPError 400 otherwise."""
    if not (text.isascii() and text.isdigit()) or len(text) > _ID_DIGITS \
            or not low <= int(text) <= high:
        raise HTTPError(400, '%s must be a whole number from %d to %d, not '
                        '%r.' % (name, low, high, text))
    return int(text)


class Format:
    """The helpers the templates use to show values."""

    def __init__(self, now):
        self.now = now

    def time(self, t, zone=None):
        if t is None:
            return '-'
        try:
            return in_zone(t, zone) if zone else moment(t)
        except (TypeError, ValueError, OverflowError, OSError, LookupError):
            return repr(t)

    def ago(self, t):
        if t is None:
            return ''
        seconds = self.now - t
        if seconds < 0:
            return 'in ' + duration(-seconds)
        return duration(seconds) + ' ago'

    def duration(self, seconds):
        return duration(seconds)

    def repr(self, value):
        return shortRepr(value)

    def status(self, status):
        return statusClass(status)

    def percent(self, fraction):
        try:
            return '%d%%' % round(fraction * 100)
        except (TypeError, ValueError, OverflowError):
            return '-'

    def traceback(self, text):
        return user_traceback(text)


class Dashboard:
    """The WSGI application; see `make_app`."""

    def __init__(self, db, service_path, secret=None, clock=None,
                 poll_seconds=5.0, allowed_hosts=None, attempts=3, auth=None,
                 recent_limit=stats.RECENT_LIMIT):
        self.db = db
        self.keys = splitPath(service_path)
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self.clock = clock or time.time
        self.poll_seconds = poll_seconds
        self.allowed_hosts = (None if allowed_hosts is None
                              else {h.lower() for h in allowed_hosts})
        self.attempts = attempts
        self.auth = auth
        self.recent_limit = recent_limit
        self._metrics = None

    # -- plumbing ----------------------------------------------------------

    def __call__(self, environ, start_response):
        request = webob.Request(environ)
        session, fresh = self._session(request)
        request.environ['zodbtasks.session'] = session
        try:
            path = request.path_info
        except UnicodeDecodeError:
            path = None
        request.environ['zodbtasks.api'] = path is not None and (
            path.startswith('/api/') or path == '/metrics')
        try:
            self._checkHost(request)
            self._checkAuth(request)
            if path is None:
                raise HTTPError(400, 'The path of the URL is not valid '
                                'UTF-8.')
            response = self._dispatch(request, path)
        except HTTPError as error:
            response = self._errorPage(request, error)
        except UnicodeDecodeError:
            response = self._errorPage(request, HTTPError(
                400, 'The query or the form is not valid UTF-8.'))
        except Exception:
            log.exception('the dashboard failed on %s %s', request.method,
                          request.path_qs)
            response = self._errorPage(request, HTTPError(
                500, 'The dashboard failed; the server log tells why.'))
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.cache_control = 'no-store'
        if fresh:
            response.set_cookie(COOKIE, session, httponly=True,
                                samesite='Strict',
                                path=request.script_name or '/',
                                secure=request.scheme == 'https')
        return response(environ, start_response)

    def _session(self, request):
        value = request.cookies.get(COOKIE, '')
        if 20 <= len(value) <= 100 and value.isascii() and value.replace(
                '-', '').replace('_', '').isalnum():
            return value, False
        return secrets.token_urlsafe(32), True

    def token(self, session):
        """The CSRF token of a session: an HMAC of it with our secret."""
        return hmac.new(self.secret, b'csrf:' + session.encode('ascii'),
                        hashlib.sha256).hexdigest()

    def _checkToken(self, request):
        given = request.POST.get(TOKEN_FIELD) or request.headers.get(
            'X-CSRF-Token', '')
        session = request.cookies.get(COOKIE)
        if not given or not session or not session.isascii() \
                or not hmac.compare_digest(
                    str(given).encode('utf-8', 'replace'),
                    self.token(session).encode('ascii')):
            raise HTTPError(403, 'Missing or bad CSRF token: reload the page '
                            'and try again.')

    def _checkHost(self, request):
        if self.allowed_hosts is None:
            return
        host = urllib.parse.urlsplit('//' + request.host).hostname or ''
        if host.lower() not in self.allowed_hosts:
            raise HTTPError(400, 'This dashboard does not answer to the host '
                            'name %r.' % host)

    def _checkAuth(self, request):
        if self.auth is None:
            return
        if not self.auth.allows(request.headers.get('Authorization', '')):
            raise HTTPError(401, 'Log in to see this dashboard.', {
                'WWW-Authenticate': 'Basic realm="%s", charset="UTF-8"'
                % REALM})

    def _transact(self, work, write=False):
        """Run ``work(service)`` in a connection and transaction of its own.

        Writes are committed only if ``work`` returns; a conflict is tried
        again, up to ``attempts`` times in all.
        """
        tm = transaction.TransactionManager(explicit=True)
        conn = self.db.open(transaction_manager=tm)
        try:
            for attempt in range(1, self.attempts + 1):
                tm.begin()
                try:
                    try:
                        service = _traverse(conn.root(), self.keys)
                    except LookupError as error:
                        raise HTTPError(500, 'No task service: %s.' % error)
                    result = work(service)
                    if write:
                        tm.commit()
                    else:
                        tm.abort()
                    return result
                except TransientError:
                    tm.abort()
                    if attempt == self.attempts:
                        raise HTTPError(503, 'The database was too busy '
                                        '(conflicts); try again.')
                    log.debug('conflict, attempt %d', attempt)
                except BaseException:
                    tm.abort()
                    raise
        finally:
            conn.close()

    def _dispatch(self, request, path):
        parts = [p for p in path.split('/') if p]
        method = 'GET' if request.method == 'HEAD' else request.method
        get = {(): self.overviewPage, ('jobs',): self.jobsPage,
               ('workers',): self.workersPage, ('api', 'counts'): self.counts,
               ('metrics',): self.metrics}
        handler = get.get(tuple(parts))
        if handler is not None:
            return self._only(method, 'GET', lambda: handler(request))
        if parts == ['jobs', 'bulk']:
            return self._only(method, 'POST', lambda: self.bulkAction(request))
        if len(parts) == 2 and parts[0] == 'static' and parts[1] in STATIC:
            return self._only(method, 'GET', lambda: self._static(parts[1]))
        if len(parts) == 2 and parts[0] == 'service' \
                and parts[1] in ('pause', 'resume'):
            return self._only(method, 'POST',
                              lambda: self.serviceAction(request, parts[1]))
        if len(parts) in (2, 3) and parts[0] == 'job':
            jobid = self._jobid(parts[1])
            if len(parts) == 2:
                return self._only(method, 'GET',
                                  lambda: self.jobPage(request, jobid))
            if parts[2] in jobinfo.ACTIONS:
                return self._only(method, 'POST', lambda: self.jobAction(
                    request, jobid, parts[2]))
        raise HTTPError(404, 'There is no page at %s.' % path)

    def _only(self, method, allowed, handler):
        if method != allowed:
            raise HTTPError(405, '%s is not allowed here.' % method,
                            {'Allow': allowed + (', HEAD' if allowed == 'GET'
                                                 else '')})
        return handler()

    def _jobid(self, text):
        if not (text.isascii() and text.isdigit()) or len(text) > _ID_DIGITS:
            raise HTTPError(404, 'No job has the id %r: an id is a whole '
                            'number.' % text)
        return int(text)

    def _job(self, service, jobid):
        job = _lookup(service, jobid)
        if job is None:
            raise HTTPError(404, 'No job has the id %r (it may have been '
                            'cleaned away).' % jobid)
        return job

    def _url(self, request, path, **query):
        url = request.script_name + path
        query = {k: v for k, v in query.items() if v not in (None, '')}
        if query:
            url += '?' + urllib.parse.urlencode(query)
        return url

    def _redirectTarget(self, request, default):
        """Where to go after a change: a path of this app, or ``default``."""
        target = request.POST.get('next', '')
        if (isinstance(target, str) and target.startswith('/')
                and not target.startswith('//') and '\\' not in target
                and not any(ord(c) < 32 for c in target)):
            return request.script_name + target
        return default

    def _redirect(self, location):
        response = webob.Response(status=303)
        response.location = location
        return response

    def _static(self, name):
        with open(os.path.join(HERE, 'static', name), 'rb') as f:
            body = f.read()
        return webob.Response(body=body, content_type=STATIC[name],
                              charset='utf-8')

    # -- rendering ---------------------------------------------------------

    def _render(self, request, template, title, section, service=None,
                status=200, **values):
        here = request.path_info + ('?' + request.query_string
                                    if request.query_string else '')
        session = request.environ['zodbtasks.session']
        now = self.clock()

        def url(path, **query):
            return self._url(request, path, **query)
        page = TEMPLATES[template](
            layout=TEMPLATES['layout.pt'], macros=TEMPLATES['macros.pt'],
            title=title, section=section, url=url, here=here,
            token=self.token(session), token_field=TOKEN_FIELD,
            service_path='/'.join(self.keys),
            paused=bool(service.paused) if service is not None else None,
            poll_seconds=self.poll_seconds, fmt=Format(now), now=now,
            actions=jobinfo.ACTIONS, **values)
        response = webob.Response(content_type='text/html', charset='utf-8',
                                  status=status)
        response.text = page
        return response

    def _errorPage(self, request, error):
        if request.environ.get('zodbtasks.api'):
            response = webob.Response(content_type='application/json',
                                      charset='utf-8')
            response.text = json.dumps({'error': error.message})
        else:
            response = webob.Response(content_type='text/html',
                                      charset='utf-8')
            response.text = TEMPLATES['error.pt'](
                status=webob.Response(status=error.status).status,
                message=error.message,
                home=request.script_name + '/')
        response.status = error.status
        for name, value in error.headers.items():
            response.headers[name] = value
        return response

    # -- the pages ---------------------------------------------------------

    def overviewPage(self, request):
        if any(name in request.GET for name in _LIST_PARAMS):
            # The job list used to be here: send its links on, checked.
            self._filters(request)
            return self._redirect(self._url(request, '/jobs') + '?'
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
            return self._render(
                request, 'overview.pt', 'Overview', 'overview', service,
                counts=statusCounts(counts), total=sum(counts.values()),
                tasks=_taskTable(counts), chart=stats.Chart(buckets),
                cut=cut, recent_limit=self.recent_limit,
                failures=stats.failures_by_task(counts, failed, now),
                slowest=stats.slowest_tasks(completed + failed),
                sampled=len(completed) + len(failed), running=running,
                latest=latest, live=len(service.liveWorkers(now)),
                unserved=service.unservedTasks(now))
        return self._transact(work)

    def _filters(self, request):
        """(status, task, limit, cursor, id) of the job list, checked."""
        get = request.GET
        status = get.get('status', '')
        if status and status not in interfaces.STATUSES:
            raise HTTPError(400, 'Unknown status %r; the statuses are %s.' % (
                status, ', '.join(STATUS_ORDER)))
        task = get.get('task', '').strip()
        limit = get.get('limit', '').strip()
        limit = DEFAULT_LIMIT if not limit else _wholeNumber(
            limit, 'limit', 1, MAX_LIMIT)
        cursor = get.get('cursor', '') or None
        jobid = get.get('id', '').strip()
        if jobid:
            jobid = _wholeNumber(jobid.lstrip('#'), 'id', 0, 10 ** _ID_DIGITS)
        return status or None, task or None, limit, cursor, jobid or None

    def _queueFilter(self, request):
        queue = request.GET.get('queue', '').strip() or None
        if queue is not None:
            try:
                check_queue_name(queue)
            except ValueError as error:
                raise HTTPError(400, str(error)) from None
        return queue

    def jobsPage(self, request):
        status, task, limit, cursor, jobid = self._filters(request)
        queue = self._queueFilter(request)

        def work(service):
            counts = service.jobCounts()
            found = None
            if jobid is not None:
                job = _lookup(service, jobid)
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
            return self._render(
                request, 'jobs.pt', 'Jobs', 'jobs', service,
                status=404 if found is False else 200,
                counts=statusCounts(counts), total=sum(counts.values()),
                task_names=sorted({t for (s, t), n in counts.items() if n}),
                statuses=STATUS_ORDER, current=status, task=task,
                queue=queue, queue_names=sorted({
                    q for (q, s), n in service.queueCounts().items() if n}),
                limit=limit, jobid=jobid, found=found, rows=rows,
                matching=matching, base=base,
                next_url=(self._url(request, '/jobs', cursor=following, **base)
                          if following else None),
                first_url=(self._url(request, '/jobs', **base)
                           if cursor else None),
                possible=jobinfo.possibleActions,
                bulk_actions=jobinfo.BULK_ACTIONS)
        return self._transact(work)

    def jobPage(self, request, jobid):
        now = self.clock()

        def work(service):
            job = self._job(service, jobid)
            cron = isinstance(job, CronJob)
            times, problem = jobinfo.nextRuns(job, now) if cron else ([], None)
            data = None
            if getattr(job, 'data', None) is not None:
                data = sorted(job.data.items(), key=lambda i: repr(i[0]))
            heading, error = jobinfo.shownError(job)
            log_lines = tuple(job.log)
            return self._render(
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
        return self._transact(work)

    def workersPage(self, request):
        now = self.clock()

        def work(service):
            workers = [(w, w.state(now)) for w in service.workers(now)]
            return self._render(
                request, 'workers.pt', 'Workers', 'workers', service,
                workers=workers,
                live=sum(1 for w, state in workers if state == 'live'),
                unserved=service.unservedTasks(now))
        return self._transact(work)

    def counts(self, request):
        def work(service):
            counts = statusCounts(service.jobCounts())
            return {'counts': counts, 'total': sum(counts.values()),
                    'paused': bool(service.paused), 'time': self.clock()}
        response = webob.Response(content_type='application/json',
                                  charset='utf-8')
        response.text = json.dumps(self._transact(work), sort_keys=True)
        return response

    def metrics(self, request):
        from prometheus_client.exposition import choose_encoder

        from zodbtasks.metrics import make_registry
        if self._metrics is None:
            self._metrics = make_registry(self._transact, self.clock,
                                          self.recent_limit)
        encoder, content_type = choose_encoder(
            request.headers.get('Accept', ''))
        response = webob.Response(body=encoder(self._metrics))
        response.headers['Content-Type'] = content_type
        return response

    # -- changing ----------------------------------------------------------

    def _apply(self, service, jobid, action):
        """Do ``action`` to a job; ValueError says why it does not apply."""
        method = jobinfo.ACTIONS[action][1]
        status = service.jobs[jobid].status
        if method == 'cancel' and status in interfaces.FINISHED:
            # The service would change nothing: say so.
            raise ValueError('it has finished already (%s)' % status)
        if method == 'pause':
            service.pause(jobid)
        elif method == 'startJob':
            if not service.startJob(jobid, now=self.clock()):
                raise ValueError('only a job waiting to be started can be '
                                 'started; this one is %s' % status)
        else:
            getattr(service, method)(jobid, now=self.clock())

    def jobAction(self, request, jobid, action):
        self._checkToken(request)

        def work(service):
            self._job(service, jobid)
            try:
                self._apply(service, jobid, action)
            except ValueError as error:
                raise HTTPError(409, 'Cannot %s job %d: %s' % (
                    jobinfo.ACTIONS[action][0].lower(), jobid, error)) \
                    from None
        self._transact(work, write=True)
        log.info('%s job %d', action, jobid)
        return self._redirect(self._redirectTarget(
            request, self._url(request, '/job/%d' % jobid)))

    def bulkAction(self, request):
        self._checkToken(request)
        action = request.POST.get('action', '')
        if action not in jobinfo.BULK_ACTIONS:
            raise HTTPError(400, 'action must be one of %s, not %r.' % (
                ', '.join(jobinfo.BULK_ACTIONS), action))
        ids = []
        for text in request.POST.getall('job'):
            text = text.strip()
            if not (text.isascii() and text.isdigit()) \
                    or len(text) > _ID_DIGITS:
                raise HTTPError(400, 'job must be job ids (whole numbers), '
                                'not %r.' % text)
            if int(text) not in ids:
                ids.append(int(text))
        if not ids:
            raise HTTPError(400, 'Select at least one job.')
        if len(ids) > MAX_BULK:
            raise HTTPError(400, 'At most %d jobs at once, not %d.'
                            % (MAX_BULK, len(ids)))

        def work(service):
            done, skipped = [], []
            for jobid in ids:
                if _lookup(service, jobid) is None:
                    skipped.append((jobid, 'no such job'))
                    continue
                try:
                    self._apply(service, jobid, action)
                except ValueError as error:
                    skipped.append((jobid, str(error)))
                else:
                    done.append(jobid)
            return done, skipped
        done, skipped = self._transact(work, write=True)
        log.info('%s %d job(s), %d skipped', action, len(done), len(skipped))

        def show(service):
            return self._render(
                request, 'bulk.pt', 'Jobs', 'jobs', service, action=action,
                label=jobinfo.ACTIONS[action][0], done=done, skipped=skipped,
                back=self._redirectTarget(request, self._url(request,
                                                             '/jobs')))
        return self._transact(show)

    def serviceAction(self, request, action):
        self._checkToken(request)

        def work(service):
            if action == 'pause':
                service.pause()
            else:
                service.resume(now=self.clock())
        self._transact(work, write=True)
        log.info('%s the service', action)
        return self._redirect(self._redirectTarget(request,
                                                   self._url(request, '/')))


def _lookup(service, jobid):
    """The job ``jobid`` or None (an id too large for the tree included)."""
    try:
        return service.jobs.get(jobid)
    except (TypeError, OverflowError, ValueError):
        return None


def _taskTable(counts):
    """[(task, {status: n}, total)] for the tasks with jobs, by name."""
    found = {}
    for (status, task), n in counts.items():
        if n:
            found.setdefault(task, {})[status] = n
    return [(task, found[task], sum(found[task].values()))
            for task in sorted(found)]


def make_app(db, service_path, **options):
    """The WSGI application of the dashboard of the service at
    ``service_path`` (slash-separated keys from the root) in ``db``.

    Options: ``secret`` (bytes; the key of the CSRF tokens, random per
    process by default), ``clock`` (the function giving the time, for the
    actions, the overview and the next runs), ``poll_seconds`` (how often
    the pages refresh the counts; 0 for never), ``allowed_hosts`` (host
    names the app answers to; None for any), ``attempts`` (tries at a
    request that meets conflicts), ``auth`` (a
    `zodbtasks.dashboard.auth.Credentials` every request must match; None,
    the default, for none: mounted in Zope or Pyramid, theirs applies) and
    ``recent_limit`` (finished jobs of each outcome the overview and the
    metrics read).
    """
    return Dashboard(db, service_path, **options)
