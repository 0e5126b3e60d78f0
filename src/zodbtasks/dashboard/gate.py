"""Who may reach the dashboard: the host names it answers to, and the
credentials every request must carry when it serves on its own."""
import urllib.parse

from zodbtasks.dashboard.auth import REALM
from zodbtasks.dashboard.web import HTTPError


class Gate:
    """The checks made before any page: host name, then login.

    ``allowed_hosts`` is None for any host; ``auth`` a
    `zodbtasks.dashboard.auth.Credentials`, or None for no login.
    """

    def __init__(self, allowed_hosts=None, auth=None):
        self.allowed_hosts = (None if allowed_hosts is None
                              else {h.lower() for h in allowed_hosts})
        self.auth = auth

    def check(self, request):
        """HTTPError 400 for an unknown host, 401 without credentials."""
        self.check_host(request)
        self.check_auth(request)

    def check_host(self, request):
        if self.allowed_hosts is None:
            return
        host = urllib.parse.urlsplit('//' + request.host).hostname or ''
        if host.lower() not in self.allowed_hosts:
            raise HTTPError(400, 'This dashboard does not answer to the host '
                            'name %r.' % host)

    def check_auth(self, request):
        if self.auth is None:
            return
        if not self.auth.allows(request.headers.get('Authorization', '')):
            raise HTTPError(401, 'Log in to see this dashboard.', {
                'WWW-Authenticate': 'Basic realm="%s", charset="UTF-8"'
                % REALM})
