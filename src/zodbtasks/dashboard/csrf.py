"""The browser's session cookie and the CSRF tokens bound to it.

Every change is a POST that carries a token: an HMAC of the session cookie
with a secret of the process, so that another site, which can neither read
the cookie nor know the secret, cannot make one.
"""
import hashlib
import hmac
import secrets

from zodbtasks.dashboard.web import HTTPError

COOKIE = 'zodbtasks_dashboard'
TOKEN_FIELD = 'csrf_token'


class Sessions:
    """Session cookies, and the tokens of a secret (random by default)."""

    def __init__(self, secret=None):
        self.secret = secret if secret is not None else secrets.token_bytes(32)

    def session(self, request):
        """(the request's session, whether it is new and must be set)."""
        value = request.cookies.get(COOKIE, '')
        if 20 <= len(value) <= 100 and value.isascii() and value.replace(
                '-', '').replace('_', '').isalnum():
            return value, False
        return secrets.token_urlsafe(32), True

    def set_cookie(self, request, response, session):
        response.set_cookie(COOKIE, session, httponly=True,
                            samesite='Strict',
                            path=request.script_name or '/',
                            secure=request.scheme == 'https')

    def token(self, session):
        """The CSRF token of a session: an HMAC of it with our secret."""
        return hmac.new(self.secret, b'csrf:' + session.encode('ascii'),
                        hashlib.sha256).hexdigest()

    def check(self, request):
        """HTTPError 403 unless the request carries its session's token."""
        given = request.POST.get(TOKEN_FIELD) or request.headers.get(
            'X-CSRF-Token', '')
        session = request.cookies.get(COOKIE)
        if not given or not session or not session.isascii() \
                or not hmac.compare_digest(
                    str(given).encode('utf-8', 'replace'),
                    self.token(session).encode('ascii')):
            raise HTTPError(403, 'Missing or bad CSRF token: reload the page '
                            'and try again.')
