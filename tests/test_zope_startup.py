"""Starting and stopping with Zope, without a running instance: where the
settings come from, who may autostart, and the signal handlers that stop
processors before Zope closes its databases."""
import logging
import os
import signal
import sys
import threading
import types

import persistent.mapping
import pytest
import zope.component

import zodbtasks
from zodbtasks import startup
from zodbtasks import threads
from zodbtasks._testing import waitFor

if not os.environ.get('ZODBTASKS_REQUIRE_ZOPE'):
    pytest.importorskip('Zope2', reason='needs Zope 5 (the zope extra)')

import App.config as App  # noqa: E402
from zodbtasks.zope import context  # noqa: E402
from zodbtasks.zope import lifetime  # noqa: E402


@pytest.fixture
def zope_configuration(monkeypatch):
    """Zope's configuration, with a product configuration we choose."""
    settings = {}
    configuration = types.SimpleNamespace(product_config={
        'zodbtasks': settings})
    monkeypatch.setattr(App, 'getConfiguration', lambda: configuration)
    monkeypatch.setitem(startup._state, 'configuration', None)
    monkeypatch.setitem(startup._state, 'refused', None)
    monkeypatch.delenv(startup.AUTOSTART_VARIABLE, raising=False)
    return settings


def test_zope_product_config_is_read_even_with_zope_app_appsetup(
        zope_configuration, monkeypatch):
    zope_configuration['autostart'] = '@tasks'
    # zope.app.appsetup installed but not filled in, as in a Zope instance.
    product = types.ModuleType('zope.app.appsetup.product')
    product.getProductConfiguration = lambda name: None
    for name in ('zope.app', 'zope.app.appsetup'):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, 'zope.app.appsetup.product', product)
    assert startup.getConfiguration() == {'autostart': '@tasks'}
    # Where only zope.app.appsetup has one, it is used.
    zope_configuration.clear()
    monkeypatch.setattr(App, 'getConfiguration',
                        lambda: types.SimpleNamespace(product_config=None))
    product.getProductConfiguration = lambda name: {'autostart': '@other'}
    assert startup.getConfiguration() == {'autostart': '@other'}


@pytest.fixture
def database(db):
    with db.transaction() as conn:
        conn.root()['Application'] = persistent.mapping.PersistentMapping()
        conn.root()['Application']['tasks'] = zodbtasks.TaskService()
    yield db
    threads.stopAll(10, db)


def opened(db):
    return types.SimpleNamespace(database=db)


def test_scripts_do_not_autostart_unless_told_to(zope_configuration,
                                                 database, monkeypatch):
    zope_configuration['autostart'] = '@tasks'
    monkeypatch.setitem(sys.modules, 'Zope2.utilities.zconsole',
                        types.ModuleType('Zope2.utilities.zconsole'))
    assert startup.databaseOpened(opened(database)) == []
    assert not threads.running()
    zope_configuration['autostart-scripts'] = 'on'
    assert startup.databaseOpened(opened(database)) == [
        ('Application', 'tasks')]
    threads.stopAll(10, database)


def test_the_environment_variable_turns_autostart_off(zope_configuration,
                                                      database, monkeypatch):
    zope_configuration['autostart'] = '@tasks'
    monkeypatch.setenv('ZODBTASKS_AUTOSTART', 'off')
    assert startup.databaseOpened(opened(database)) == []
    monkeypatch.setenv('ZODBTASKS_AUTOSTART', 'on')
    assert startup.databaseOpened(opened(database)) == [
        ('Application', 'tasks')]
    threads.stopAll(10, database)
    monkeypatch.setenv('ZODBTASKS_AUTOSTART', 'maybe')
    assert startup.databaseOpened(opened(database)) == []   # logged, refused


def test_a_worker_that_loaded_zope_conf_does_not_autostart(
        zope_configuration, database):
    zope_configuration['autostart'] = '@tasks'
    startup.disableAutostart('a worker')
    assert startup.autostartRefused({}) == 'a worker'
    assert startup.databaseOpened(opened(database)) == []


@pytest.mark.parametrize('text, seconds', [(None, 10.0), ('2.5', 2.5),
                                           ('0', 0.0)])
def test_the_grace_period_setting(text, seconds):
    assert lifetime.grace({'stop-grace': text}) == seconds


@pytest.mark.parametrize('text', ['soon', '-1', '4000', 'nan'])
def test_a_bad_grace_period_is_refused_with_its_name(text):
    with pytest.raises(ValueError, match="stop-grace.*%r" % text):
        lifetime.grace({'stop-grace': text})


@pytest.mark.parametrize('url', ['https://www.example.com',
                                 'http://intranet:8080/'])
def test_server_url_is_a_scheme_and_a_host(url):
    assert context.checkServerURL(url) == url.rstrip('/')


@pytest.mark.parametrize('url', ['www.example.com', 'ftp://host',
                                 'https://host/path', 'http://:80',
                                 'http://host:port', None])
def test_a_bad_server_url_is_refused_with_its_name(url):
    with pytest.raises(ValueError, match='server-url'):
        context.checkServerURL(url)


@pytest.fixture
def handlers():
    saved = {signum: signal.getsignal(signum) for signum in lifetime.SIGNALS}
    yield
    lifetime.uninstallSignalHandlers()
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def slow_job(database):
    """A processor running a job that takes a moment."""
    started, release = threading.Event(), threading.Event()

    def slow(input):
        started.set()
        release.wait(10)
        return 'done'

    zope.component.provideUtility(zodbtasks.SimpleTask(slow), name='slow')
    with database.transaction() as conn:
        service = conn.root()['Application']['tasks']
        jobid = service.add('slow')
    with database.transaction() as conn:
        threads.startProcessing(conn.root()['Application']['tasks'],
                                'Application/tasks')
    assert started.wait(10)
    return jobid, release


def test_sigterm_stops_the_processors_after_the_job_in_hand_then_chains(
        handlers, database, slow_job, zope_configuration, caplog):
    jobid, release = slow_job
    seen = []

    def previous(signum, frame):
        # The handler that was there runs after the processors stopped.
        seen.append((signum, [keys for (_, keys), _ in threads.running()]))

    signal.signal(signal.SIGTERM, previous)
    assert signal.SIGTERM in lifetime.installSignalHandlers()
    threading.Timer(0.3, release.set).start()
    with caplog.at_level(logging.INFO, 'zodbtasks.zope'):
        os.kill(os.getpid(), signal.SIGTERM)
        waitFor(lambda: seen, 30, 'the previous handler')
    assert seen == [(signal.SIGTERM, [])]
    with database.transaction() as conn:
        job = conn.root()['Application']['tasks'].jobs[jobid]
        assert (job.status, job.output) == ('completed', 'done')
    messages = [r.getMessage() for r in caplog.records]
    assert ('zodbtasks: SIGTERM: stopping the processors of '
            '/Application/tasks (up to 10.0 s for the jobs in hand)'
            in messages)
    assert 'zodbtasks: processors stopped: /Application/tasks' in messages


def test_sigint_keeps_raising_keyboard_interrupt_after_stopping(
        handlers, database, slow_job, zope_configuration):
    jobid, release = slow_job
    signal.signal(signal.SIGINT, signal.default_int_handler)
    zope_configuration['stop-grace'] = '5'
    lifetime.installSignalHandlers()
    threading.Timer(0.3, release.set).start()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        waitFor(lambda: False, 30, 'the interrupt')
    assert not threads.running()
    with database.transaction() as conn:
        assert conn.root()['Application']['tasks'].jobs[jobid].status == \
            'completed'


def test_a_job_longer_than_the_grace_period_is_left_to_its_lease(
        handlers, database, slow_job, caplog):
    jobid, release = slow_job
    with caplog.at_level(logging.INFO, 'zodbtasks.zope'):
        assert not lifetime.stopProcessors(0.2)
    assert 'still running after 0.2 s' in caplog.text
    release.set()
    waitFor(lambda: not threads.running(), 30, 'the processor ending')


def test_an_ignored_signal_stays_ignored(handlers):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    assert signal.SIGTERM not in lifetime.installSignalHandlers()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


def test_handlers_are_installed_once(handlers):
    lifetime.installSignalHandlers()
    first = signal.getsignal(signal.SIGTERM)
    lifetime.installSignalHandlers()
    assert signal.getsignal(signal.SIGTERM) is first
    lifetime.uninstallSignalHandlers()
    assert signal.getsignal(signal.SIGTERM) is not first
