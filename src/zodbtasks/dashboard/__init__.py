"""A web dashboard for one task service.

``zodbtasks dashboard --db URI --service PATH`` serves it; `make_app` gives
the WSGI application to mount elsewhere. Its pages: an overview (counts,
throughput over the last hour, failures and the slowest tasks), the
workers, the jobs (filters, search by id, bulk cancel and retry), one job
in full (its runs, schedule and next times, data, error and log), and
``/metrics`` for Prometheus.

It needs the ``dashboard`` extra: WebOb for requests and responses,
Chameleon for its page templates, prometheus_client for ``/metrics`` and
waitress to serve (the standard library's wsgiref is used without it).

Security, in short (see docs/dashboard.rst): it binds to 127.0.0.1 unless
told otherwise, and to anything else only with ``--auth``; every change is
a POST that carries a token bound to the browser's session cookie by an
HMAC with a secret of the process; the templates escape every value shown;
the pages allow no inline script and cannot be framed.
"""
from zodbtasks.dashboard.app import Dashboard
from zodbtasks.dashboard.app import make_app
from zodbtasks.dashboard.command import add_arguments
from zodbtasks.dashboard.command import main
from zodbtasks.dashboard.command import run
from zodbtasks.dashboard.command import serve
from zodbtasks.dashboard.csrf import COOKIE
from zodbtasks.dashboard.csrf import TOKEN_FIELD
from zodbtasks.dashboard.jobinfo import ACTIONS
from zodbtasks.dashboard.jobinfo import NEXT_TIMES
from zodbtasks.dashboard.jobinfo import describeSchedule
from zodbtasks.dashboard.jobinfo import nextRuns
from zodbtasks.dashboard.jobinfo import possibleActions
from zodbtasks.dashboard.pages import DEFAULT_LIMIT
from zodbtasks.dashboard.pages import MAX_LIMIT
from zodbtasks.dashboard.pages import STATUS_ORDER
from zodbtasks.dashboard.pages import _SHOWN_KEYS
from zodbtasks.dashboard.web import HTTPError

__all__ = [
    'ACTIONS', 'COOKIE', 'DEFAULT_LIMIT', 'MAX_LIMIT', 'NEXT_TIMES',
    'STATUS_ORDER', 'TOKEN_FIELD', 'Dashboard', 'HTTPError', '_SHOWN_KEYS',
    'add_arguments', 'describeSchedule', 'main', 'make_app', 'nextRuns',
    'possibleActions', 'run', 'serve']
