"""The "Jobs" tab of a task service: zodbtasks' dashboard inside Zope.

The view hands the request to a `zodbtasks.dashboard.Dashboard` for the
service's database and path, mounted at the view's URL, so that the ZMI shows
the same list, job pages and actions as ``zodbtasks dashboard``. Zope checks
the permission ("zodbtasks: Manage task services") before the dashboard sees
the request; the dashboard's own rules (POST with a CSRF token for every
change, escaped values) apply as they do outside Zope.
"""
import io
import threading
import urllib.parse
from typing import TYPE_CHECKING

from Products.Five.browser import BrowserView
from zope.interface import implementer
from zope.publisher.interfaces import IPublishTraverse

from zodbtasks.zope.service import servicePath

if TYPE_CHECKING:
    from ZODB.DB import DB

    from zodbtasks.dashboard import Dashboard

# (database, keys) -> Dashboard, for a stable secret
_dashboards: 'dict[tuple[DB, tuple[str, ...]], Dashboard]' = {}
_lock = threading.Lock()


def dashboardFor(service):
    from zodbtasks.dashboard import Dashboard
    db = service._p_jar.db()
    keys = servicePath(service)
    with _lock:
        found = _dashboards.get((db, keys))
        if found is None:
            found = _dashboards[db, keys] = Dashboard(db, keys)
        return found


@implementer(IPublishTraverse)
class JobsView(BrowserView):
    """The dashboard of the service, at ``<service>/manage_jobs/...``."""

    def __init__(self, context, request):
        super().__init__(context, request)
        self.subpath = []

    def publishTraverse(self, request, name):
        self.subpath.append(name)
        return self

    def __call__(self):
        request = self.request
        service = getattr(self.context, 'aq_inner', self.context)
        app = dashboardFor(service)
        environ = self._environ()
        answer = {}

        def start_response(status, headers, exc_info=None):
            answer['status'], answer['headers'] = status, headers

        body = b''.join(app(environ, start_response))
        response = request.response
        status = int(answer['status'].split()[0])
        headers = answer['headers']
        location = dict(headers).get('Location')
        if location is not None:
            response.redirect(location, status=status, lock=True)
        else:
            response.setStatus(status, lock=True)
        for name, value in headers:
            if name.lower() == 'location':
                continue
            if name.lower() == 'set-cookie':
                response.addHeader(name, value)
            else:
                response.setHeader(name, value)
        return body

    def _environ(self):
        """The WSGI environment for the dashboard: the view's URL is its
        script name, the rest of the path its path."""
        request = self.request
        environ = dict(request.environ)
        method = request.get('REQUEST_METHOD', 'GET').upper()
        path = urllib.parse.urlsplit(request['URL']).path
        rest = '/'.join(self.subpath)
        script = path[:-len(rest) - 1] if rest and path.endswith('/' + rest) \
            else path.rstrip('/')
        environ['SCRIPT_NAME'] = script
        environ['PATH_INFO'] = '/' + rest if rest else '/'
        environ['REQUEST_METHOD'] = method
        body = b''
        if method == 'POST':
            # Zope has read the form already: hand it on, encoded again.
            form = [(k, v) for k, v in request.form.items()
                    if isinstance(v, str)]
            body = urllib.parse.urlencode(form).encode('utf-8')
            environ['CONTENT_TYPE'] = 'application/x-www-form-urlencoded'
        environ['CONTENT_LENGTH'] = str(len(body))
        environ['wsgi.input'] = io.BytesIO(body)
        return environ
