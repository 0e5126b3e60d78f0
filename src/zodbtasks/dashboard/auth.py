"""Who may use a dashboard that serves on its own: ``--auth FILE``.

The file holds one credential a line: ``user:password`` for HTTP Basic, or
a bare token, sent as ``Authorization: Bearer TOKEN`` (or as the password
of Basic, with any user name, so that a browser can log in with it).
Blank lines and lines starting with ``#`` are skipped. Every comparison is
made with `hmac.compare_digest`.
"""
import base64
import binascii
import hmac
import ipaddress
import os
import stat

REALM = 'zodbtasks dashboard'


class AuthFileError(ValueError):
    """The file of credentials cannot be used."""


class Credentials:
    """The users and tokens allowed in, and the check of a request."""

    def __init__(self, users=(), tokens=()):
        self.users = [(u.encode('utf-8'), p.encode('utf-8'))
                      for u, p in users]
        self.tokens = [t.encode('utf-8') for t in tokens]
        if not self.users and not self.tokens:
            raise AuthFileError('no user:password line and no token')

    @classmethod
    def from_file(cls, path):
        """Read ``path``; AuthFileError says what is wrong with it."""
        try:
            with open(path, encoding='utf-8') as f:
                lines = f.read().splitlines()
            mode = os.stat(path).st_mode
        except (OSError, UnicodeDecodeError) as error:
            raise AuthFileError('cannot read %s: %s' % (path, error)) from None
        users, tokens = [], []
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            if ':' in line:
                user, password = line.split(':', 1)
                if not user or not password:
                    raise AuthFileError(
                        '%s line %d: expected user:password with neither '
                        'empty, or a token' % (path, number))
                users.append((user, password))
            else:
                tokens.append(line)
        try:
            found = cls(users, tokens)
        except AuthFileError as error:
            raise AuthFileError('%s: %s' % (path, error)) from None
        found.world_readable = bool(mode & (stat.S_IRGRP | stat.S_IROTH))
        return found

    world_readable = False

    def allows(self, header):
        """Whether the ``Authorization`` header value lets the request in."""
        if not header:
            return False
        scheme, _, value = header.strip().partition(' ')
        value = value.strip().encode('latin-1', 'replace')
        if scheme.lower() == 'bearer':
            return self._token(value)
        if scheme.lower() != 'basic':
            return False
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return False
        user, colon, password = decoded.partition(b':')
        if not colon:
            return False
        ok = False
        for known, secret in self.users:
            # Compare every entry, so the time does not tell which matched.
            ok |= hmac.compare_digest(user, known) & hmac.compare_digest(
                password, secret)
        return bool(ok | self._token(password))

    def _token(self, given):
        ok = False
        for token in self.tokens:
            ok |= hmac.compare_digest(given, token)
        return bool(ok)


def is_loopback(host):
    """Whether ``host`` (an address or 'localhost') is this machine only."""
    if host.lower() == 'localhost':     # host names ignore case
        return True
    try:
        return ipaddress.ip_address(host.strip('[]')).is_loopback
    except ValueError:
        return False
