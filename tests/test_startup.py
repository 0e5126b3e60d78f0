"""Services start processing when the application's database opens."""
import logging
import threading

import persistent
import persistent.mapping
import pytest
import transaction
import zope.event

import zodbtasks
from zodbtasks import processor
from zodbtasks import startup
from zodbtasks._testing import waitFor

WAIT = 30


class Site(persistent.mapping.PersistentMapping):
    """A container with a site manager, as zope.component sites have."""

    def __init__(self):
        super().__init__()
        self.manager = persistent.mapping.PersistentMapping()
        self.manager['default'] = persistent.mapping.PersistentMapping()

    def getSiteManager(self):
        return self.manager


@pytest.fixture(autouse=True)
def clean(db):
    # Asks for the database, so that it is closed after this stops the
    # processors that use it, not under their feet.
    yield
    assert processor.stopAll(WAIT)
    startup.configure()
    startup.storeDBReference(None)


@pytest.fixture
def app(db):
    """Application/{main, site1/{tasks, mail}, site2/tasks, site3 (manager)}
    """
    with db.transaction() as conn:
        root = conn.root()
        root['Application'] = app = persistent.mapping.PersistentMapping()
        app['main'] = zodbtasks.TaskService()
        app['site1'] = site1 = persistent.mapping.PersistentMapping()
        site1['tasks'] = zodbtasks.TaskService()
        site1['mail'] = zodbtasks.TaskService()
        site1['notes'] = 'not a service'
        app['site2'] = persistent.mapping.PersistentMapping()
        app['site2']['tasks'] = zodbtasks.TaskService()
        app['site3'] = site3 = Site()
        site3.manager['default']['tasks'] = zodbtasks.TaskService()
    return db


def paths(db, specs, root=None):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        return sorted('/'.join(keys) for keys, _ in startup.findServices(
            conn.root(), startup.parseAutostart(specs), root))
    finally:
        tm.abort()
        conn.close()


def test_autostart_is_parsed_as_the_reference_package_did():
    assert startup.parseAutostart('') == []
    assert startup.parseAutostart(None) == []
    assert startup.parseAutostart('site1@tasks,site2@tasks') == [
        ('site1', 'tasks'), ('site2', 'tasks')]
    assert startup.parseAutostart(' *@tasks \n site@* ,@main') == [
        ('*', 'tasks'), ('site', '*'), ('', 'main')]


@pytest.mark.parametrize('bad', ['tasks', 'site@', 'a@b@c', 'a/b@c'])
def test_bad_autostart_entries_are_refused(bad):
    with pytest.raises(ValueError, match='site@service'):
        startup.parseAutostart('ok@fine ' + bad)


def test_which_services_the_specs_name(app):
    assert paths(app, 'site1@tasks') == ['Application/site1/tasks']
    assert paths(app, 'site1@*') == ['Application/site1/mail',
                                     'Application/site1/tasks']
    assert paths(app, '@main') == ['Application/main']
    assert paths(app, '*@tasks') == [
        'Application/site1/tasks', 'Application/site2/tasks',
        'Application/site3/++etc++site/default/tasks']
    assert paths(app, '*@*') == [
        'Application/main', 'Application/site1/mail',
        'Application/site1/tasks', 'Application/site2/tasks',
        'Application/site3/++etc++site/default/tasks']
    assert paths(app, 'site1@tasks site1@*') == [
        'Application/site1/mail', 'Application/site1/tasks']
    assert paths(app, 'site1@tasks', root='Application/site1') == []
    assert paths(app, '@tasks', root='Application/site1') == [
        'Application/site1/tasks']


def test_specs_that_match_nothing_are_logged(app, caplog):
    with caplog.at_level(logging.WARNING, 'zodbtasks.startup'):
        assert paths(app, 'nowhere@tasks site1@nothing') == []
    assert [r.getMessage() for r in caplog.records] == [
        'zodbtasks autostart: no service matches nowhere@tasks',
        'zodbtasks autostart: no service matches site1@nothing']


def test_without_an_application_item_the_root_is_the_application(db):
    with db.transaction() as conn:
        conn.root()['tasks'] = zodbtasks.TaskService()
    assert paths(db, '@tasks') == ['tasks']


def test_configuration_set_in_code():
    assert startup.getConfiguration() == {}
    startup.configure(autostart='a@b', root='Application')
    assert startup.getConfiguration() == {'autostart': 'a@b',
                                          'root': 'Application'}
    startup.configure()
    assert startup.getConfiguration() == {}


def loadZCML():
    from zope.configuration import xmlconfig
    context = xmlconfig.file('meta.zcml', package=__import__(
        'zope.component', fromlist=['x']))
    xmlconfig.file('configure.zcml', package=zodbtasks, context=context)


def add(db, keys, task, input):
    with db.transaction() as conn:
        return processor.traverse(conn.root(), keys).add(task, input)


def statusOf(db, keys, jobid):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        tm.begin()
        return processor.traverse(conn.root(), keys).getStatus(jobid)
    finally:
        tm.abort()
        conn.close()


def test_the_database_opened_event_starts_the_configured_services(app, tasks):
    from zope.processlifetime import DatabaseOpenedWithRoot
    loadZCML()
    manager = ('Application', 'site3', '++etc++site', 'default', 'tasks')
    jobs = {keys: add(app, keys, 'echo', '/'.join(keys)) for keys in [
        ('Application', 'site1', 'tasks'), manager,
        ('Application', 'site2', 'tasks')]}
    with app.transaction() as conn:
        for keys in jobs:
            service = processor.traverse(conn.root(), keys)
            service.processorArguments = {'waitTime': 0.01}
    startup.configure(autostart='site1@tasks, site3@tasks')
    zope.event.notify(DatabaseOpenedWithRoot(app))
    assert startup.getDatabase() is app
    assert sorted(key for key, _ in processor.running()) == sorted([
        (app, ('Application', 'site1', 'tasks')), (app, manager)])
    for keys in [('Application', 'site1', 'tasks'), manager]:
        waitFor(lambda: statusOf(app, keys, jobs[keys]) == 'completed', WAIT,
                'the job of /%s completing' % '/'.join(keys))
    assert statusOf(app, ('Application', 'site2', 'tasks'),
                    jobs[('Application', 'site2', 'tasks')]) == 'queued'
    assert processor.stopAll(WAIT)
    assert processor.running() == []


def test_a_bad_setting_is_logged_and_starts_nothing(app, caplog):
    from zope.processlifetime import DatabaseOpenedWithRoot
    startup.configure(autostart='oops')
    with caplog.at_level(logging.ERROR, 'zodbtasks.startup'):
        assert startup.databaseOpened(DatabaseOpenedWithRoot(app)) == []
    assert 'autostart entries look like' in caplog.text
    assert processor.running() == []
    assert startup.getDatabase() is app


# -- as z3c.taskqueue had it ---------------------------------------------------

def test_the_database_is_kept_where_z3c_taskqueue_kept_it(db):
    from zope.processlifetime import DatabaseOpenedWithRoot
    assert zodbtasks.GLOBALDB is None
    startup.storeDBReference(db)
    assert zodbtasks.GLOBALDB is db and startup.getDatabase() is db
    with pytest.raises(TypeError, match="ZODB database.*'db.fs'"):
        startup.storeDBReference('db.fs')
    assert zodbtasks.GLOBALDB is db and startup.getDatabase() is db
    startup.storeDBReference(None)
    assert zodbtasks.GLOBALDB is None and startup.getDatabase() is None
    assert startup.databaseOpened(DatabaseOpenedWithRoot(db)) == []
    assert zodbtasks.GLOBALDB is db and startup.getDatabase() is db


@pytest.fixture
def sites(db):
    """A zope.site application: Application/site1 with a local site manager
    whose 'default' folder holds two services, one registered under a
    name of its own; Application/plain, a folder that is no site."""
    import zope.component.hooks
    import zope.site.folder
    import zope.site.site
    zope.component.provideAdapter(zope.site.site.SiteManagerAdapter)
    zope.component.hooks.setHooks()
    with db.transaction() as conn:
        conn.root()['Application'] = app = zope.site.folder.rootFolder()
        app['site1'] = site1 = zope.site.folder.Folder()
        site1.setSiteManager(zope.site.site.LocalSiteManager(site1))
        default = site1.getSiteManager()['default']
        default['mail-service'] = mail = zodbtasks.TaskService()
        default['Reports'] = zodbtasks.TaskService()   # an item only
        site1['Mail'] = zodbtasks.TaskService()        # shadowed (see below)
        site1.getSiteManager().registerUtility(
            mail, zodbtasks.ITaskService, name='Mail')
        app['plain'] = zope.site.folder.Folder()
        app['plain']['Mail'] = zodbtasks.TaskService()
    yield db
    zope.component.hooks.resetHooks()


def test_autostart_finds_services_registered_as_utilities(sites):
    registered = 'Application/site1/++etc++site/default/mail-service'
    # The utility named 'Mail' wins over the site's item 'Mail'.
    assert paths(sites, 'site1@Mail') == [registered]
    # Without such a utility the item of that name is taken, as before.
    assert paths(sites, 'site1@Reports') == [
        'Application/site1/++etc++site/default/Reports']
    assert paths(sites, 'plain@Mail') == ['Application/plain/Mail']
    assert paths(sites, '*@Mail') == ['Application/plain/Mail', registered]
    # A site's '*' is all of them: utilities and items.
    assert paths(sites, 'site1@*') == [
        'Application/site1/++etc++site/default/Reports',
        'Application/site1/++etc++site/default/mail-service',
        'Application/site1/Mail']


def test_the_database_opened_event_starts_a_registered_service(sites, tasks):
    from zope.processlifetime import DatabaseOpenedWithRoot
    keys = ('Application', 'site1', '++etc++site', 'default', 'mail-service')
    jobid = add(sites, keys, 'echo', 'mail')
    with sites.transaction() as conn:
        processor.traverse(conn.root(), keys).processorArguments = {
            'waitTime': 0.01}
    startup.configure(autostart='site1@Mail')
    assert startup.databaseOpened(DatabaseOpenedWithRoot(sites)) == [keys]
    assert [key for key, _ in processor.running()] == [(sites, keys)]
    waitFor(lambda: statusOf(sites, keys, jobid) == 'completed', WAIT,
            'the job of the registered service completing')
    assert processor.stopAll(WAIT)


# -- processor paths from the application root ---------------------------------

def test_a_processor_path_may_start_at_the_application_root(db, tasks):
    from zodbtasks.paths import findService
    with db.transaction() as conn:
        root = conn.root()
        root['Application'] = app = persistent.mapping.PersistentMapping()
        app['tasks'] = zodbtasks.TaskService()
        jobid = app['tasks'].add('echo', 'below the application')
    # ['tasks'] is not in the database root: it is the application's.
    proc = processor.SimpleProcessor(db, ['tasks'], waitTime=0)
    assert proc.hasJobsWaiting()
    assert proc.processNext() is True
    assert statusOf(db, ('Application', 'tasks'), jobid) == 'completed'
    with db.transaction() as conn:
        root = conn.root()
        assert findService(root, ('tasks',)) is root['Application']['tasks']
        with pytest.raises(KeyError, match="no service at 'nowhere'"):
            findService(root, ('nowhere',))


def test_the_database_root_wins_when_both_roots_have_the_path(db, tasks):
    from zodbtasks.paths import findService
    with db.transaction() as conn:
        root = conn.root()
        root['Application'] = app = persistent.mapping.PersistentMapping()
        app['tasks'] = zodbtasks.TaskService()
        root['tasks'] = zodbtasks.TaskService()
        inApp = app['tasks'].add('echo', 'application')
        inRoot = root['tasks'].add('echo', 'root')
    with db.transaction() as conn:
        root = conn.root()
        assert findService(root, ('tasks',)) is root['tasks']
        assert findService(root, ('Application', 'tasks')) is (
            root['Application']['tasks'])
    proc = processor.SimpleProcessor(db, 'tasks', waitTime=0)
    assert proc.processNext() is True
    assert proc.processNext() is False
    assert tasks == [('echo', 'root')]
    assert statusOf(db, ('Application', 'tasks'), inApp) == 'queued'
    assert statusOf(db, ('tasks',), inRoot) == 'completed'


# -- as lovely.remotetask had it -----------------------------------------------

def test_the_autostart_entries_by_lovely_remotetasks_name():
    assert startup.getAutostartServiceNames() == []
    startup.configure(autostart='site1@tasks, site2@mail,@main\n *@*')
    assert startup.getAutostartServiceNames() == [
        'site1@tasks', 'site2@mail', '@main', '*@*']
    startup.configure(autostart='site1@tasks, mail')
    with pytest.raises(ValueError, match="site@service.*'mail'"):
        startup.getAutostartServiceNames()


def test_the_autostart_entries_come_from_the_product_configuration():
    from zope.app.appsetup.product import setProductConfigurations

    class Section:
        mapping = {'autostart': 'site1@tasks,@main'}

        def getSectionName(self):
            return 'zodbtasks'

    setProductConfigurations([Section()])
    try:
        assert startup.getAutostartServiceNames() == ['site1@tasks', '@main']
    finally:
        setProductConfigurations([])
    assert startup.getAutostartServiceNames() == []


def test_lovely_remotetasks_names_are_in_the_service_module():
    from zodbtasks import service
    from zodbtasks.service import bootStrapSubscriber
    assert bootStrapSubscriber is startup.bootStrapSubscriber
    assert service.getAutostartServiceNames is (
        startup.getAutostartServiceNames)
    with pytest.raises(AttributeError, match='startProcessing'):
        service.startProcessing


@pytest.fixture
def lovelySites(db):
    """A zope.site application as lovely.remotetask's were: the root folder
    is a site with the service 'Main' registered in it; site1 registers
    'Mail' (the item 'mail-service' of its 'default' folder) and holds
    'Reports', a service registered nowhere; 'plain' is a folder that is no
    site, with a service of its own."""
    import zope.component.hooks
    import zope.site.folder
    import zope.site.site
    zope.component.provideAdapter(zope.site.site.SiteManagerAdapter)
    zope.component.hooks.setHooks()
    with db.transaction() as conn:
        conn.root()['Application'] = app = zope.site.folder.rootFolder()
        app.setSiteManager(zope.site.site.LocalSiteManager(app))
        default = app.getSiteManager()['default']
        default['main'] = main = zodbtasks.TaskService()
        app.getSiteManager().registerUtility(
            main, zodbtasks.ITaskService, name='Main')
        app['site1'] = site1 = zope.site.folder.Folder()
        site1.setSiteManager(zope.site.site.LocalSiteManager(site1))
        # Based on the root's registry, as in an application server (here
        # without the location adapters that would find it).
        site1.getSiteManager().__bases__ = (app.getSiteManager(),)
        default = site1.getSiteManager()['default']
        default['mail-service'] = mail = zodbtasks.TaskService()
        default['Reports'] = zodbtasks.TaskService()
        site1.getSiteManager().registerUtility(
            mail, zodbtasks.ITaskService, name='Mail')
        app['plain'] = zope.site.folder.Folder()
        app['plain']['Plain'] = zodbtasks.TaskService()
        for service in (main, mail):
            service.processorArguments = {'waitTime': 0.01}
    yield db
    zope.component.hooks.resetHooks()


MAIN = ('Application', '++etc++site', 'default', 'main')
MAIL = ('Application', 'site1', '++etc++site', 'default', 'mail-service')


def bootStrap(db, autostart, caplog, **settings):
    """Fire lovely.remotetask's subscriber; what it said, and the paths of
    the processors running then."""
    from zope.processlifetime import DatabaseOpenedWithRoot
    startup.configure(autostart=autostart, **settings)
    caplog.clear()
    with caplog.at_level(logging.INFO, 'zodbtasks'):
        assert startup.bootStrapSubscriber(DatabaseOpenedWithRoot(db)) is None
    said = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    return said, sorted(keys for (_, keys), _ in processor.running())


def started(*lines):
    return [('zodbtasks', 'INFO', 'handling event IStartRemoteTasksEvent')
            ] + [('zodbtasks', level, line) for level, line in lines]


def test_bootstrap_starts_the_registered_services_it_names(
        lovelySites, tasks, caplog):
    jobid = add(lovelySites, MAIL, 'echo', 'mail')
    said, running = bootStrap(
        lovelySites, 'site1@Mail, nowhere@Mail,@Main', caplog)
    assert said == started(
        ('INFO', 'service Mail on site site1 started'),
        ('ERROR', 'site nowhere not found'),
        ('INFO', 'service Main on site root started'))
    assert running == [MAIN, MAIL]
    assert startup.getDatabase() is lovelySites
    waitFor(lambda: statusOf(lovelySites, MAIL, jobid) == 'completed', WAIT,
            'the job of the service that bootStrapSubscriber started')


def test_bootstrap_says_which_named_services_are_missing(lovelySites, caplog):
    # A service that is an item but registered nowhere is not lovely's.
    said, running = bootStrap(lovelySites, 'site1@Reports plain@Plain',
                              caplog)
    assert said == started(
        ('ERROR', 'service Reports on site site1 not found'),
        ('ERROR', 'service Plain on site plain not found'))
    assert running == []


def test_a_sites_star_leaves_out_what_it_inherits_from_the_root(
        lovelySites, caplog):
    said, running = bootStrap(lovelySites, 'site1@*', caplog)
    assert said == started(('INFO', 'service Mail on site site1 started'))
    assert running == [MAIL]


def test_star_at_star_is_every_registered_service_of_every_site(
        lovelySites, caplog):
    said, running = bootStrap(lovelySites, '*@*', caplog)
    # site1 sees 'Main' too, through the root: it is started once.
    assert said == started(('INFO', 'service Main on site root started'),
                           ('INFO', 'service Mail on site site1 started'))
    assert running == [MAIN, MAIL]


def test_star_at_a_name_is_that_service_in_every_site(lovelySites, caplog):
    said, running = bootStrap(lovelySites, '*@Mail', caplog)
    assert said == started(('INFO', 'service Mail on site site1 started'))
    assert running == [MAIL]


def test_services_processing_already_are_left_alone(lovelySites, caplog):
    bootStrap(lovelySites, '@Main', caplog)
    (_, firstProcessor), = processor.running()
    said, running = bootStrap(lovelySites, '*@* @Main', caplog)
    assert said == started(
        ('INFO', 'service Mail on site site1 started'))
    assert running == [MAIN, MAIL]
    assert dict(processor.running())[lovelySites, MAIN] is firstProcessor
    said, _ = bootStrap(lovelySites, '*@* *@Nothing', caplog)
    assert said == started(
        ('WARNING', 'no services started by directive *@*'),
        ('WARNING', 'no services started by directive *@Nothing'))


def test_bootstrap_obeys_the_root_setting(lovelySites, caplog):
    said, running = bootStrap(lovelySites, '@Mail', caplog,
                              root='Application/site1')
    assert said == started(('INFO', 'service Mail on site root started'))
    assert running == [MAIL]


def test_bootstrap_with_a_bad_setting_starts_nothing(lovelySites, caplog):
    startup.storeDBReference(None)
    said, running = bootStrap(lovelySites, 'site1@Mail oops', caplog)
    assert said[0] == started()[0]
    assert said[1][:2] == ('zodbtasks.startup', 'ERROR')
    assert "not 'oops'" in said[1][2]
    assert running == []
    assert startup.getDatabase() is lovelySites


def test_only_this_threads_start_line_is_left_out(caplog):
    logger = logging.getLogger('zodbtasks')
    with caplog.at_level(logging.INFO, 'zodbtasks'):
        with startup._WithoutStartLine():
            logger.info('starting service tasks')
            logger.warning('a warning of this thread')
            elsewhere = threading.Thread(
                target=lambda: logger.info('a line of another thread'))
            elsewhere.start()
            elsewhere.join(WAIT)
            logging.getLogger('zodbtasks.startup').info('a child logger')
        logger.info('after it')
    assert [r.getMessage() for r in caplog.records] == [
        'a warning of this thread', 'a line of another thread',
        'a child logger', 'after it']
