"""``zodbtasks dashboard``: serve the dashboard on its own."""
import argparse
import logging
import signal
import sys
import threading

from zodbtasks.dashboard.app import make_app
from zodbtasks.dashboard.auth import AuthFileError
from zodbtasks.dashboard.auth import Credentials
from zodbtasks.dashboard.auth import is_loopback
from zodbtasks.dashboard.transact import find_service
from zodbtasks.paths import splitPath

log = logging.getLogger('zodbtasks.dashboard')

_LOOPBACK = ('127.0.0.1', 'localhost', '::1')


class NeedsAuth(ValueError):
    """The dashboard would be reachable from other machines without auth."""


def serve(db, service_path, host='127.0.0.1', port=8080, allowed_hosts=None,
          auth=None, **options):
    """Serve the dashboard until interrupted, with waitress if installed.

    Bound to the loopback address, it answers only to loopback host names,
    which defeats DNS rebinding; give ``allowed_hosts`` when a proxy in
    front uses another name. Bound to any other address it needs ``auth``
    (`zodbtasks.dashboard.auth.Credentials`): NeedsAuth otherwise.
    """
    if auth is None and not is_loopback(host):
        raise NeedsAuth(
            '%s is not a loopback address: give --auth FILE (lines of '
            'user:password, or a token) so that only those who know them '
            'can use the dashboard' % host)
    if allowed_hosts is None and is_loopback(host):
        allowed_hosts = _LOOPBACK
    app = make_app(db, service_path, allowed_hosts=allowed_hosts, auth=auth,
                   **options)
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
    log.info('dashboard of /%s on http://%s:%d/%s', '/'.join(app.keys),
             host, port, ' (login required)' if auth else '')
    waitress.serve(app, host=host, port=port, threads=4,
                   ident='zodbtasks-dashboard')


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
                        'machine only; any other needs --auth)')
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
    parser.add_argument('--auth', metavar='FILE', default=None,
                        help='a file of user:password lines (HTTP Basic) or '
                        'tokens (Authorization: Bearer); every request must '
                        'match one. Required unless --host is a loopback '
                        'address')
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _error(text):
    print('zodbtasks dashboard: error: ' + text, file=sys.stderr)
    return 1


def run(args):
    """Run ``zodbtasks dashboard`` with parsed arguments; return exit code."""
    from zodbtasks.connect import open_database as openDatabase
    auth = None
    path = getattr(args, 'auth', None)
    if path:
        try:
            auth = Credentials.from_file(path)
        except AuthFileError as error:
            return _error('--auth: %s' % error)
        if auth.world_readable:
            log.warning('--auth %s can be read by other users of this '
                        'machine: chmod 600 it', path)
    elif not is_loopback(args.host):
        return _error(
            '--host %s is not a loopback address: give --auth FILE (lines '
            'of user:password, or a token) so that only those who know them '
            'can use the dashboard, or serve on 127.0.0.1 behind a proxy '
            'that authenticates' % args.host)
    try:
        db = openDatabase(args.db)
    except Exception as error:
        return _error('cannot open --db %s: %s: %s'
                      % (args.db, type(error).__name__, error))
    try:
        try:
            keys = splitPath(args.service)
            conn = db.open()
            try:
                find_service(conn.root(), keys)
            finally:
                conn.transaction_manager.abort()
                conn.close()
        except (LookupError, ValueError) as error:
            return _error('--service %s: %s' % (args.service, error))
        previous = None
        if threading.current_thread() is threading.main_thread():
            # Stop on SIGTERM as on Ctrl-C, so the database is closed.
            previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            serve(db, args.service, host=args.host, port=args.port,
                  allowed_hosts=getattr(args, 'allowed_hosts', None),
                  poll_seconds=getattr(args, 'poll', 5.0), auth=auth)
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
