"""A small web dashboard for one task service.

``zodbtasks dashboard --db URI --service PATH`` serves it; `make_app` gives
the WSGI application to mount elsewhere. It lists the jobs by status, shows
one job in full (log, progress, error, schedule and its next times, lease)
and can cancel, retry, pause, resume and run a job now.

It needs the ``dashboard`` extra: WebOb for requests and responses, and
waitress to serve (the standard library's wsgiref is used without it).

Security, in short (see docs/dashboard.rst): it binds to 127.0.0.1 unless
told otherwise and has no authentication of its own; every change is a POST
that carries a token bound to the browser's session cookie by an HMAC with
a secret of the process; every value shown is HTML-escaped; the pages allow
no inline script and cannot be framed.
"""
import argparse
import datetime
import hashlib
import heapq
import hmac
import html
import json
import logging
import secrets
import signal
import sys
import threading
import time
import urllib.parse
import zoneinfo

import transaction
import webob
from transaction.interfaces import TransientError

from zodbtasks import interfaces
from zodbtasks import schedule as schedules
from zodbtasks.job import CronJob
from zodbtasks.processor import splitPath
from zodbtasks.processor import traverse

log = logging.getLogger('zodbtasks.dashboard')

#: The statuses in the order the dashboard shows them: waiting, then done.
STATUS_ORDER = (
    interfaces.QUEUED, interfaces.PROCESSING, interfaces.RETRYING,
    interfaces.DELAYED, interfaces.CRONJOB, interfaces.PAUSED,
    interfaces.STARTLATER, interfaces.ERROR, interfaces.CANCELLED,
    interfaces.COMPLETED)

#: The job actions: URL name -> (label, service method name).
ACTIONS = {
    'cancel': ('Cancel', 'cancel'),
    'retry': ('Retry', 'retry'),
    'pause': ('Pause', 'pause'),
    'resume': ('Resume', 'resume'),
    'run-now': ('Run now', 'runNow'),
}

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
NEXT_TIMES = 5
COOKIE = 'zodbtasks_dashboard'
TOKEN_FIELD = 'csrf_token'
_SHOWN_REPR = 2000   # characters of a job's input or output shown
_SHOWN_KEYS = 50     # keys of a job's data (context.data) shown

_SECURITY_HEADERS = {
    'Content-Security-Policy': (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"),
    'X-Frame-Options': 'DENY',
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'same-origin',
}


# -- HTML that is escaped unless it says it is markup ------------------------

class Markup(str):
    """Text that is already HTML; everything else is escaped when inserted."""


def escape(value):
    """``value`` as HTML: markup as is, anything else escaped."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape('' if value is None else str(value), quote=True))


def render(template, *args, **kwargs):
    """Fill a trusted ``str.format`` template with escaped values."""
    return Markup(template.format(*map(escape, args),
                                  **{k: escape(v) for k, v in kwargs.items()}))


def join(parts, separator=''):
    return Markup(escape(separator).join(escape(part) for part in parts))


# -- formatting values -------------------------------------------------------

def _formatTime(seconds, timezone=None):
    if seconds is None:
        return '-'
    try:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
        text = moment.strftime('%Y-%m-%d %H:%M:%S UTC')
        if timezone:
            local = moment.astimezone(zoneinfo.ZoneInfo(timezone))
            text += local.strftime(' (%Y-%m-%d %H:%M:%S %Z)')
        return text
    except (TypeError, ValueError, OverflowError, OSError, LookupError):
        return repr(seconds)


def _timeCell(seconds, timezone=None):
    if seconds is None:
        return Markup('-')
    return render('<time data-epoch="{0}">{1}</time>', seconds,
                  _formatTime(seconds, timezone))


def _shortRepr(value):
    try:
        text = repr(value)
    except Exception as error:   # a broken __repr__ must not break the page
        text = '(no repr: %s)' % type(error).__name__
    if len(text) > _SHOWN_REPR:
        text = text[:_SHOWN_REPR] + '... (%d characters)' % len(text)
    return text


def _statusBadge(status):
    css = 'status-' + ''.join(c if c.isalnum() else '-' for c in str(status))
    return render('<span class="status {0}">{1}</span>', css, status)


def possibleActions(job):
    """The URL names of the actions that make sense for ``job`` now."""
    status = job.status
    found = []
    if status not in interfaces.FINISHED:
        found.append('cancel')
    if status in (interfaces.ERROR, interfaces.CANCELLED,
                  interfaces.RETRYING):
        found.append('retry')
    repeating = isinstance(job, CronJob) and job.delay is None
    if getattr(job, 'paused', False):
        found.append('resume')
    elif status not in interfaces.FINISHED and (
            status != interfaces.PROCESSING or repeating):
        found.append('pause')
    if status in (interfaces.DELAYED, interfaces.CRONJOB,
                  interfaces.RETRYING):
        found.append('run-now')
    return found


def describeSchedule(job):
    """A line saying when a cron job or a delayed job runs."""
    if not isinstance(job, CronJob):
        return None
    if job.delay is not None:
        return 'once, %s seconds after the tick that places it' % (job.delay,)
    if job.cron is not None:
        text = 'cron %r' % (job.cron,)
    elif job.interval is not None:
        text = 'every %s seconds' % (job.interval,)
    else:
        fields = [('second', job.second), ('minute', job.minute),
                  ('hour', job.hour), ('dayOfMonth', job.dayOfMonth),
                  ('month', job.month), ('dayOfWeek', job.dayOfWeek)]
        text = ', '.join('%s %s' % (name, ','.join(map(str, values)))
                         for name, values in fields if values) or 'every minute'
    if job.timezone:
        text += ' in %s' % (job.timezone,)
    if job.start is not None:
        text += ', from %s' % _formatTime(job.start)
    if job.end is not None:
        text += ', until %s' % _formatTime(job.end)
    return text


def nextRuns(job, now, count=NEXT_TIMES):
    """The next ``count`` times of a repeating job's schedule after ``now``.

    Returns (times, problem): a schedule that cannot be compiled any more
    (a time zone that went away, say) gives no times and a message.
    """
    if not isinstance(job, CronJob) or job.delay is not None:
        return [], None
    try:
        compiled = job.schedule
        if (job.interval is not None and job.start is None
                and job.scheduledFor is not None):
            # As the service does: an interval counts from the last due time.
            compiled = schedules.bounded(schedules.every(
                job.interval, anchor=job.scheduledFor), end=job.end)
        return schedules.next_times(compiled, now, count), None
    except Exception as error:
        return [], '%s: %s' % (type(error).__name__, error)


# -- the application ---------------------------------------------------------

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


class Dashboard:
    """The WSGI application; see `make_app`."""

    def __init__(self, db, service_path, secret=None, clock=None,
                 poll_seconds=5.0, allowed_hosts=None, attempts=3):
        self.db = db
        self.keys = splitPath(service_path)
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self.clock = clock or time.time
        self.poll_seconds = poll_seconds
        self.allowed_hosts = (None if allowed_hosts is None
                              else {h.lower() for h in allowed_hosts})
        self.attempts = attempts

    # -- plumbing ----------------------------------------------------------

    def __call__(self, environ, start_response):
        request = webob.Request(environ)
        session, fresh = self._session(request)
        request.environ['zodbtasks.session'] = session
        try:
            self._checkHost(request)
            response = self._dispatch(request)
        except HTTPError as error:
            response = self._errorPage(request, error)
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
        if 20 <= len(value) <= 100 and value.replace('-', '').replace(
                '_', '').isalnum():
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
        if not given or not session or not hmac.compare_digest(
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

    def _dispatch(self, request):
        parts = [p for p in request.path_info.split('/') if p]
        method = 'GET' if request.method == 'HEAD' else request.method
        if parts == []:
            return self._only(method, 'GET', lambda: self.listPage(request))
        if parts == ['api', 'counts']:
            return self._only(method, 'GET', lambda: self.counts(request))
        if len(parts) == 2 and parts[0] == 'static' and parts[1] in STATIC:
            content_type, body = STATIC[parts[1]]
            return self._only(method, 'GET', lambda: webob.Response(
                body=body.encode('utf-8'), content_type=content_type,
                charset='utf-8'))
        if len(parts) == 2 and parts[0] == 'service' \
                and parts[1] in ('pause', 'resume'):
            return self._only(method, 'POST',
                              lambda: self.serviceAction(request, parts[1]))
        if len(parts) in (2, 3) and parts[0] == 'job':
            jobid = self._jobid(parts[1])
            if len(parts) == 2:
                return self._only(method, 'GET',
                                  lambda: self.jobPage(request, jobid))
            if parts[2] in ACTIONS:
                return self._only(method, 'POST', lambda: self.jobAction(
                    request, jobid, parts[2]))
        raise HTTPError(404, 'There is no page at %s.' % request.path_info)

    def _only(self, method, allowed, handler):
        if method != allowed:
            raise HTTPError(405, '%s is not allowed here.' % method,
                            {'Allow': allowed + (', HEAD' if allowed == 'GET'
                                                 else '')})
        return handler()

    def _jobid(self, text):
        if not text.isdigit() or len(text) > 20:
            raise HTTPError(404, 'No job has the id %r.' % text)
        return int(text)

    def _job(self, service, jobid):
        try:
            return service.jobs[jobid]
        except (KeyError, IndexError, TypeError):
            raise HTTPError(404, 'No job has the id %r (it may have been '
                            'cleaned away).' % jobid) from None

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

    # -- reading -----------------------------------------------------------

    def _scan(self, service, status=None, task=None, limit=DEFAULT_LIMIT):
        """The counts by status, the task names, and the newest jobs
        that match (this reads every job: listing indexes are to come)."""
        counts = _statusCounts(service)
        tasks = {task for (s, task), n in service.jobCounts().items() if n}
        matching = []
        for job in service.jobs.values():
            if status and job.status != status:
                continue
            if task and task not in job.task:
                continue
            matching.append(job)
        rows = heapq.nlargest(limit, matching,
                              key=lambda j: (j.created or 0, j.id))
        return counts, sorted(tasks), rows, len(matching)

    def counts(self, request):
        def work(service):
            counts = _statusCounts(service)
            return {'counts': counts, 'total': sum(counts.values()),
                    'paused': bool(service.paused), 'time': self.clock()}
        response = webob.Response(content_type='application/json',
                                  charset='utf-8')
        response.text = json.dumps(self._transact(work), sort_keys=True)
        return response

    def _filters(self, request):
        status = request.GET.get('status', '')
        if status and status not in STATUS_ORDER and \
                status not in interfaces.STATUSES:
            raise HTTPError(400, 'Unknown status %r.' % status)
        task = request.GET.get('task', '').strip()
        limit = request.GET.get('limit', '') or str(DEFAULT_LIMIT)
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
            raise HTTPError(400, 'limit must be a whole number from 1 to %d.'
                            % MAX_LIMIT)
        return status, task, int(limit)

    def listPage(self, request):
        status, task, limit = self._filters(request)
        here = request.path_info + ('?' + request.query_string
                                    if request.query_string else '')

        def work(service):
            counts, tasks, rows, matched = self._scan(service, status, task,
                                                      limit)
            return self._page(request, 'Jobs', join([
                self._serviceBanner(request, service, here),
                self._countsBar(request, counts, status, task, limit),
                self._filterForm(request, status, task, limit, tasks),
                render('<p class="shown">Showing {0} of {1} matching '
                       'job(s), newest first.</p>', len(rows), matched),
                self._jobTable(request, rows, here),
            ]))
        return self._transact(work)

    def _serviceBanner(self, request, service, here):
        if service.paused:
            return render(
                '<div class="banner paused" id="service-paused">The service '
                'is paused: workers claim no job. {0}</div>',
                self._button(request, '/service/resume', 'Resume service',
                             here))
        return render('<div class="banner">Service /{0} {1}</div>',
                      '/'.join(self.keys),
                      self._button(request, '/service/pause', 'Pause service',
                                   here))

    def _countsBar(self, request, counts, current, task, limit):
        items = [render(
            '<li><a href="{0}" class="{1}">all <span class="count" '
            'id="count-total" data-count="*">{2}</span></a></li>',
            self._url(request, '/', task=task,
                      limit=limit if limit != DEFAULT_LIMIT else None),
            'current' if not current else '', sum(counts.values()))]
        for status, n in counts.items():
            items.append(render(
                '<li><a href="{0}" class="{1}">{2} <span class="count" '
                'data-count="{3}">{4}</span></a></li>',
                self._url(request, '/', status=status, task=task,
                          limit=limit if limit != DEFAULT_LIMIT else None),
                'current' if status == current else '',
                _statusBadge(status), status, n))
        return render('<ul class="counts" id="counts">{0}</ul>', join(items))

    def _filterForm(self, request, status, task, limit, tasks):
        options = [render('<option value=""{0}>any status</option>',
                          Markup(' selected') if not status else '')]
        for name in STATUS_ORDER:
            options.append(render('<option value="{0}"{1}>{0}</option>', name,
                                  Markup(' selected') if name == status
                                  else ''))
        return render(
            '<form class="filters" method="get" action="{0}">'
            '<label>Status <select name="status">{1}</select></label> '
            '<label>Task <input name="task" value="{2}" list="task-names" '
            'placeholder="part of a task name"></label>'
            '<datalist id="task-names">{3}</datalist> '
            '<label>Limit <input name="limit" type="number" min="1" max="{4}" '
            'value="{5}"></label> <button type="submit">Filter</button>'
            '</form>',
            self._url(request, '/'), join(options), task,
            join(render('<option value="{0}">', t) for t in tasks),
            MAX_LIMIT, limit)

    def _button(self, request, path, label, here, css=''):
        """A one-button form that POSTs to ``path`` with the CSRF token."""
        return render(
            '<form class="action" method="post" action="{0}">'
            '<input type="hidden" name="{1}" value="{2}">'
            '<input type="hidden" name="next" value="{3}">'
            '<button type="submit" class="{4}">{5}</button></form>',
            self._url(request, path), TOKEN_FIELD,
            self.token(request.environ['zodbtasks.session']), here, css,
            label)

    def _actionButtons(self, request, job, here):
        return join(self._button(request, '/job/%d/%s' % (job.id, name),
                                 ACTIONS[name][0], here, css=name)
                    for name in possibleActions(job))

    def _jobTable(self, request, rows, here):
        if not rows:
            return Markup('<p class="empty">No job matches.</p>')
        body = []
        for job in rows:
            due = job.scheduledFor if job.status not in interfaces.FINISHED \
                else None
            progress = job.progress
            body.append(render(
                '<tr id="job-{0}" data-job="{0}">'
                '<td><a href="{1}">{0}</a></td><td>{2}</td><td>{3}</td>'
                '<td>{4}</td><td>{5}</td><td>{6}</td><td>{7}</td>'
                '<td class="error">{8}</td><td class="actions">{9}</td></tr>',
                job.id, self._url(request, '/job/%d' % job.id), job.task,
                _statusBadge(job.status), _timeCell(job.created),
                _timeCell(due), job.attempts,
                '' if not progress else '%d%%' % round(progress[0] * 100),
                (job.error or '')[:120], self._actionButtons(request, job,
                                                             here)))
        return render(
            '<table class="jobs" id="jobs"><thead><tr><th>Id</th><th>Task'
            '</th><th>Status</th><th>Created</th><th>Due</th><th>Attempts'
            '</th><th>Progress</th><th>Error</th><th>Actions</th></tr>'
            '</thead><tbody>{0}</tbody></table>', join(body))

    def jobPage(self, request, jobid):
        here = '/job/%d' % jobid

        def work(service):
            job = self._job(service, jobid)
            return self._page(request, 'Job %d' % jobid,
                              self._jobDetails(request, job, here))
        return self._transact(work)

    def _jobDetails(self, request, job, here):
        now = self.clock()
        rows = [('Task', job.task), ('Status', _statusBadge(job.status)),
                ('Paused', 'yes' if job.paused else 'no'),
                ('Created', _timeCell(job.created)),
                ('Started', _timeCell(job.started)),
                ('Completed', _timeCell(job.completed)),
                ('Attempts', job.attempts),
                ('Retries', '%d of %d used' % (job.retried, job.retries)),
                ('Due', _timeCell(job.scheduledFor)),
                ('Expires', _timeCell(job.expires)),
                ('Input', render('<code>{0}</code>', _shortRepr(job.input))),
                ('Output', render('<code>{0}</code>',
                                  _shortRepr(job.output)))]
        lease = job.lease
        if lease is not None:
            rows.append(('Lease', render(
                '<span id="lease">held by {0} until {1}{2}</span>',
                lease.worker or '(unnamed worker)', _timeCell(lease.expires),
                ' (expired)' if lease.expires < now else '')))
        parts = [render('<h2>Job {0} {1}</h2><div class="actions">{2}</div>',
                        job.id, _statusBadge(job.status),
                        self._actionButtons(request, job, here))]
        if job.progress:
            fraction, message = job.progress
            parts.append(render(
                '<section id="progress"><h3>Progress</h3><progress max="1" '
                'value="{0}">{1}%</progress> {1}% {2}</section>',
                fraction, round(fraction * 100), message or ''))
        parts.append(render('<table class="fields">{0}</table>', join(
            render('<tr><th>{0}</th><td>{1}</td></tr>', name, value)
            for name, value in rows)))
        if isinstance(job, CronJob):
            parts.append(self._scheduleSection(job, now))
        if getattr(job, 'data', None) is not None:
            items = sorted(job.data.items(), key=lambda item: repr(item[0]))
            parts.append(render(
                '<section id="data"><h3>Data kept between runs</h3><table '
                'class="fields">{0}</table>{1}</section>', join(
                    render('<tr><th>{0}</th><td><code>{1}</code></td></tr>',
                           _shortRepr(key), _shortRepr(value))
                    for key, value in items[:_SHOWN_KEYS]),
                '' if len(items) <= _SHOWN_KEYS else render(
                    '<p>and {0} more keys</p>', len(items) - _SHOWN_KEYS)))
        if job.error:
            parts.append(render('<section id="error"><h3>Error</h3>'
                                '<pre>{0}</pre></section>', job.error))
        if job.traceback:
            parts.append(render('<section id="traceback"><h3>Traceback</h3>'
                                '<pre>{0}</pre></section>', job.traceback))
        if job.failures:
            parts.append(render(
                '<section id="failures"><h3>Latest failures</h3><table>{0}'
                '</table></section>', join(
                    render('<tr><td>{0}</td><td>{1}</td></tr>',
                           _timeCell(when), message)
                    for when, message in reversed(job.failures))))
        parts.append(render(
            '<section id="log"><h3>Log</h3><pre>{0}</pre></section>',
            '\n'.join(map(str, job.log)) if job.log else '(empty)'))
        parts.append(render('<p><a href="{0}">All jobs</a></p>',
                            self._url(request, '/')))
        return join(parts)

    def _scheduleSection(self, job, now):
        rows = [('Schedule', describeSchedule(job)),
                ('Runs', job.runs if job.maxRuns is None
                 else '%d of at most %d' % (job.runs, job.maxRuns)),
                ('Missed', job.missedRuns)]
        if job.lastMissed:
            when, count, action = job.lastMissed
            rows.append(('Last missed', render('{0}: {1} time(s), {2}',
                                               _timeCell(when), count,
                                               action)))
        if job.delay is None:
            rows.append(('Misfire', '%s (grace %ss, catch up %s), overlap %s'
                         % (job.misfire, job.misfireGrace, job.catchUp,
                            job.overlap)))
        times, problem = nextRuns(job, now)
        if problem:
            upcoming = render('<p class="error">The schedule cannot be '
                              'computed: {0}</p>', problem)
        elif times:
            upcoming = render('<ol id="next-runs">{0}</ol>', join(
                render('<li>{0}</li>', _timeCell(t, job.timezone))
                for t in times))
        elif job.delay is not None:
            upcoming = Markup('<p>A delayed job runs once; see Due.</p>')
        else:
            upcoming = Markup('<p id="next-runs">The schedule has no more '
                              'times.</p>')
        return render(
            '<section id="schedule"><h3>Schedule</h3><table class="fields">'
            '{0}</table><h4>Next times of the schedule</h4>{1}</section>',
            join(render('<tr><th>{0}</th><td>{1}</td></tr>', name, value)
                 for name, value in rows), upcoming)

    def _page(self, request, title, body):
        page = render(
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width">'
            '<title>{0} - zodbtasks</title>'
            '<link rel="stylesheet" href="{1}"></head>'
            '<body data-counts-url="{2}" data-poll-seconds="{3}">'
            '<header><a href="{4}">zodbtasks</a> /{5} '
            '<span id="refreshed"></span></header><main>{6}</main>'
            '<script src="{7}"></script></body></html>',
            title, self._url(request, '/static/dashboard.css'),
            self._url(request, '/api/counts'), self.poll_seconds,
            self._url(request, '/'), '/'.join(self.keys), body,
            self._url(request, '/static/dashboard.js'))
        response = webob.Response(content_type='text/html', charset='utf-8')
        response.text = page
        return response

    def _errorPage(self, request, error):
        if request.path_info.startswith('/api/'):
            response = webob.Response(content_type='application/json',
                                      charset='utf-8')
            response.text = json.dumps({'error': error.message})
        else:
            response = webob.Response(content_type='text/html',
                                      charset='utf-8')
            response.text = render(
                '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
                '<title>{0}</title><link rel="stylesheet" href="{1}"></head>'
                '<body><main><h2>{0}</h2><p class="message">{2}</p>'
                '<p><a href="{3}">All jobs</a></p></main></body></html>',
                webob.Response(status=error.status).status,
                self._url(request, '/static/dashboard.css'), error.message,
                self._url(request, '/'))
        response.status = error.status
        for name, value in error.headers.items():
            response.headers[name] = value
        return response

    # -- changing ----------------------------------------------------------

    def jobAction(self, request, jobid, action):
        self._checkToken(request)
        method = ACTIONS[action][1]

        def work(service):
            self._job(service, jobid)
            try:
                if method == 'pause':
                    service.pause(jobid)
                else:
                    getattr(service, method)(jobid, now=self.clock())
            except ValueError as error:
                raise HTTPError(409, 'Cannot %s job %d: %s' % (
                    ACTIONS[action][0].lower(), jobid, error)) from None
        self._transact(work, write=True)
        log.info('%s job %d', action, jobid)
        return self._redirect(self._redirectTarget(
            request, self._url(request, '/job/%d' % jobid)))

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

    def _redirect(self, location):
        response = webob.Response(status=303)
        response.location = location
        return response


STATIC = {
    'dashboard.js': ('application/javascript', r"""
// Refresh the job counts from the JSON endpoint, without reloading the page.
(function () {
  'use strict';
  var body = document.body;
  var url = body.getAttribute('data-counts-url');
  var every = parseFloat(body.getAttribute('data-poll-seconds')) * 1000;
  var stamp = document.getElementById('refreshed');
  if (!url || !(every > 0)) { return; }
  function show(data) {
    var cells = document.querySelectorAll('[data-count]');
    for (var i = 0; i < cells.length; i++) {
      var status = cells[i].getAttribute('data-count');
      var n = status === '*' ? data.total : data.counts[status];
      if (n !== undefined && cells[i].textContent !== String(n)) {
        cells[i].textContent = String(n);
        cells[i].classList.add('changed');
      }
    }
    if (stamp) {
      stamp.textContent = 'counts at ' + new Date().toLocaleTimeString() +
        (data.paused ? ' (service paused)' : '');
      stamp.className = '';
    }
  }
  function refresh() {
    fetch(url, {credentials: 'same-origin', cache: 'no-store',
                headers: {'Accept': 'application/json'}})
      .then(function (r) {
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.json();
      })
      .then(show)
      .catch(function (e) {
        if (stamp) { stamp.textContent = 'counts not refreshed: ' + e.message;
                     stamp.className = 'stale'; }
      })
      .then(function () { window.setTimeout(refresh, every); });
  }
  window.setTimeout(refresh, every);
})();
"""),
    'dashboard.css': ('text/css', """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; }
header { background: #234; color: #fff; padding: .5em 1em; }
header a { color: #fff; font-weight: bold; text-decoration: none; }
#refreshed { float: right; opacity: .8; font-size: 90%; }
#refreshed.stale { color: #fc8; }
main { padding: 1em; }
.banner { margin-bottom: .8em; }
.banner.paused { background: #fed; border: 1px solid #d90; padding: .5em; }
ul.counts { list-style: none; padding: 0; display: flex; flex-wrap: wrap;
            gap: .4em; }
ul.counts a { display: block; padding: .3em .6em; border: 1px solid #ccc;
              border-radius: 4px; text-decoration: none; color: inherit; }
ul.counts a.current { border-color: #234; background: #eef; }
.count { font-weight: bold; }
.count.changed { color: #06c; }
.status { padding: 0 .4em; border-radius: 3px; background: #eee; }
.status-error { background: #fcc; } .status-completed { background: #cfc; }
.status-processing { background: #cdf; } .status-cancelled { background: #ddd; }
.status-retrying, .status-paused { background: #fe9; }
table { border-collapse: collapse; }
table.jobs td, table.jobs th, table.fields td, table.fields th {
  border-bottom: 1px solid #ddd; padding: .25em .5em; text-align: left;
  vertical-align: top; }
td.error, .error { color: #a00; }
time { white-space: nowrap; }
form.action { display: inline; margin-right: .3em; }
form.filters { margin: .8em 0; }
pre { background: #f6f6f6; padding: .6em; overflow: auto; max-height: 30em; }
"""),
}


def make_app(db, service_path, **options):
    """The WSGI application of the dashboard of the service at
    ``service_path`` (slash-separated keys from the root) in ``db``.

    Options: ``secret`` (bytes; the key of the CSRF tokens, random per
    process by default), ``clock`` (the function giving the time, for the
    actions and the next runs), ``poll_seconds`` (how often the pages
    refresh the counts; 0 for never), ``allowed_hosts`` (host names the
    app answers to; None for any) and ``attempts`` (tries at a request
    that meets conflicts).
    """
    return Dashboard(db, service_path, **options)


_LOOPBACK = ('127.0.0.1', 'localhost', '::1')


def serve(db, service_path, host='127.0.0.1', port=8080, allowed_hosts=None,
          **options):
    """Serve the dashboard until interrupted, with waitress if installed.

    Bound to the loopback address, it answers only to loopback host names,
    which defeats DNS rebinding; give ``allowed_hosts`` when a proxy in
    front uses another name.
    """
    if allowed_hosts is None and host in _LOOPBACK:
        allowed_hosts = _LOOPBACK
    app = make_app(db, service_path, allowed_hosts=allowed_hosts, **options)
    try:
        import waitress
    except ImportError:
        import wsgiref.simple_server
        log.warning('waitress is not installed: serving with wsgiref, one '
                    'request at a time')
        server = wsgiref.simple_server.make_server(host, port, app)
        log.info('dashboard on http://%s:%d/', host, server.server_port)
        try:
            server.serve_forever()
        finally:
            server.server_close()
        return
    log.info('dashboard of /%s on http://%s:%d/', '/'.join(app.keys),
             host, port)
    waitress.serve(app, host=host, port=port, threads=4,
                   ident='zodbtasks-dashboard')


# -- the command -------------------------------------------------------------

def add_arguments(parser):
    """Add the options of ``zodbtasks dashboard`` to an argparse parser."""
    parser.add_argument('--db', required=True, metavar='URI',
                        help='zodburi URI (file://, zeo://, zconfig://, ...), '
                        'a .conf ZConfig file or a .fs FileStorage path')
    parser.add_argument('--service', required=True, metavar='PATH',
                        help='slash-separated keys from the database root to '
                        'the service, e.g. app/tasks')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on (default 127.0.0.1: this '
                        'machine only)')
    parser.add_argument('--port', type=int, default=8080,
                        help='port to listen on (default 8080)')
    parser.add_argument('--allowed-host', action='append', default=None,
                        dest='allowed_hosts', metavar='NAME',
                        help='a host name the dashboard answers to (repeat '
                        'for more; default: the loopback names when bound to '
                        'loopback, any name otherwise)')
    parser.add_argument('--poll', type=float, default=5.0, metavar='SECONDS',
                        help='how often pages refresh the counts (default 5; '
                        '0 never)')
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args):
    """Run ``zodbtasks dashboard`` with parsed arguments; return exit code."""
    from zodbtasks.connect import open_database as openDatabase
    try:
        db = openDatabase(args.db)
    except Exception as error:
        print('zodbtasks dashboard: error: cannot open --db %s: %s: %s'
              % (args.db, type(error).__name__, error), file=sys.stderr)
        return 1
    try:
        try:
            keys = splitPath(args.service)
            conn = db.open()
            try:
                _traverse(conn.root(), keys)
            finally:
                conn.transaction_manager.abort()
                conn.close()
        except (LookupError, ValueError) as error:
            print('zodbtasks dashboard: error: --service %s: %s'
                  % (args.service, error), file=sys.stderr)
            return 1
        previous = None
        if threading.current_thread() is threading.main_thread():
            # Stop on SIGTERM as on Ctrl-C, so the database is closed.
            previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            serve(db, args.service, host=args.host, port=args.port,
                  allowed_hosts=getattr(args, 'allowed_hosts', None),
                  poll_seconds=getattr(args, 'poll', 5.0))
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        log.info('dashboard stopped')
        return 0
    finally:
        db.close()


def main(argv=None):
    """``zodbtasks dashboard`` on its own: parse ``argv`` and run."""
    parser = add_arguments(argparse.ArgumentParser(
        prog='zodbtasks dashboard',
        description='Serve a web dashboard of a zodbtasks task service.'))
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format='%(asctime)s %(levelname)s %(name)s '
                            '%(message)s')
    return run(args)


def _statusCounts(service):
    """{status: number of jobs}, every status, from the service's counts."""
    counts = dict.fromkeys(STATUS_ORDER, 0)
    for (status, task), n in service.jobCounts().items():
        counts[status] = counts.get(status, 0) + n
    return counts


if __name__ == '__main__':
    sys.exit(main())
