"""The dashboard's WSGI application: it composes the parts and handles each
request from end to end.

A request gets its session, passes the gate (host name, login), is routed
to a page, the API or an action, and its response gets the security
headers and, for a new session, the cookie. Every request opens its own
connection and transaction (`zodbtasks.dashboard.transact`).

The parts, one module each: `csrf` (session cookie and tokens), `gate`
(who may reach it), `transact` (the service in a transaction), `render`
(templates, error pages, static files), `pages`, `api` and `actions`
(what each URL does) and `routing` (which URL is which).
"""
import logging
import time

import webob

from zodbtasks.dashboard import stats
from zodbtasks.dashboard.actions import Actions
from zodbtasks.dashboard.api import Api
from zodbtasks.dashboard.csrf import Sessions
from zodbtasks.dashboard.gate import Gate
from zodbtasks.dashboard.pages import Pages
from zodbtasks.dashboard.render import API_KEY
from zodbtasks.dashboard.render import SESSION_KEY
from zodbtasks.dashboard.render import Renderer
from zodbtasks.dashboard.routing import Router
from zodbtasks.dashboard.routing import is_api
from zodbtasks.dashboard.transact import Transactions
from zodbtasks.dashboard.web import HTTPError
from zodbtasks.paths import splitPath

log = logging.getLogger('zodbtasks.dashboard')

_SECURITY_HEADERS = {
    'Content-Security-Policy': (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"),
    'X-Frame-Options': 'DENY',
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'same-origin',
}


class Dashboard:
    """The WSGI application; see `make_app`."""

    def __init__(self, db, service_path, secret=None, clock=None,
                 poll_seconds=5.0, allowed_hosts=None, attempts=3, auth=None,
                 recent_limit=stats.RECENT_LIMIT):
        self.db = db
        self.keys = splitPath(service_path)
        clock = clock or time.time
        self.sessions = Sessions(secret)
        self.gate = Gate(allowed_hosts, auth)
        self.transact = Transactions(db, self.keys, attempts)
        self.render = Renderer(self.sessions, clock, '/'.join(self.keys),
                               poll_seconds)
        self.router = Router(
            Pages(self.transact, self.render, clock, recent_limit),
            Api(self.transact, clock, recent_limit),
            Actions(self.sessions, self.transact, self.render, clock))

    def token(self, session):
        """The CSRF token of a session (see `zodbtasks.dashboard.csrf`)."""
        return self.sessions.token(session)

    def __call__(self, environ, start_response):
        request = webob.Request(environ)
        session, fresh = self.sessions.session(request)
        request.environ[SESSION_KEY] = session
        try:
            path = request.path_info
        except UnicodeDecodeError:
            path = None
        request.environ[API_KEY] = path is not None and is_api(path)
        response = self._respond(request, path)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.cache_control = 'no-store'
        if fresh:
            self.sessions.set_cookie(request, response, session)
        return response(environ, start_response)

    def _respond(self, request, path):
        """The response to ``request``: its page, or the page of what
        went wrong."""
        try:
            self.gate.check(request)
            if path is None:
                raise HTTPError(400, 'The path of the URL is not valid '
                                'UTF-8.')
            return self.router.dispatch(request, path)
        except HTTPError as error:
            return self.render.error(request, error)
        except UnicodeDecodeError:
            return self.render.error(request, HTTPError(
                400, 'The query or the form is not valid UTF-8.'))
        except Exception:
            log.exception('the dashboard failed on %s %s', request.method,
                          request.path_qs)
            return self.render.error(request, HTTPError(
                500, 'The dashboard failed; the server log tells why.'))


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
