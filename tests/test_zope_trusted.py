"""Only registered tasks run, unless the service trusts a module
(``trustedModules``). No Zope needed: this protects every service, and the
Zope instance test shows it over HTTP and in restricted code."""
import os

import persistent
import pytest
import zope.component

import zodbtasks


class Account(persistent.Persistent):

    balance = 0

    def credit(self, amount):
        self.balance += amount
        return self.balance


@pytest.mark.parametrize('name', ['os.system', 'subprocess.call',
                                  'builtins.eval', 'os.path.basename'])
def test_a_dotted_name_is_refused_unless_its_module_is_trusted(
        service, name, tmp_path):
    before = len(service.jobs)
    with pytest.raises(ValueError) as raised:
        service.add(name, 'touch %s' % (tmp_path / 'owned'), now=0)
    message = str(raised.value)
    assert repr(name) in message and 'trustedModules' in message
    assert len(service.jobs) == before          # no trace
    assert not os.path.exists(tmp_path / 'owned')


def test_a_method_is_refused_unless_its_class_module_is_trusted(service):
    account = Account()
    with pytest.raises(ValueError, match='credit.*trustedModules'):
        service.add(account.credit, 10, now=0)
    assert len(service.jobs) == 0


def test_trusted_modules_are_prefixes_of_whole_module_names(service):
    service.trustedModules = ['os.path', Account.__module__]
    jobid = service.add('os.path.basename', '/a/b', now=0)
    service.processNext(now=0)
    assert service.getResult(jobid) == 'b'
    account = Account()
    jobid = service.add(account.credit, 5, now=0)
    service.processNext(now=0)
    assert service.getResult(jobid) == 5
    # 'os.path' trusts os.path and below it, never os itself nor a module
    # whose name only begins the same way.
    with pytest.raises(ValueError, match='trustedModules'):
        service.add('os.system', 'true', now=0)
    service.trustedModules = 'os.pa'
    assert service.trustedModules == ('os.pa',)
    with pytest.raises(ValueError, match='trustedModules'):
        service.add('os.path.basename', '/a/b', now=0)


def test_a_registered_task_runs_whatever_trusted_modules_says(service, tasks):
    zope.component.provideUtility(zodbtasks.SimpleTask(str.upper),
                                  name='os.system')
    jobid = service.add('os.system', 'x', now=0)
    service.processNext(now=0)
    assert service.getResult(jobid) == 'X'


@pytest.mark.parametrize('value', [['os', ''], [None], 3, ['os..x.'],
                                   ['my app']])
def test_trusted_modules_refuses_what_is_not_a_list_of_module_names(
        service, value):
    with pytest.raises(TypeError, match='trustedModules'):
        service.trustedModules = value
    assert service.trustedModules == ()


def test_a_job_stored_before_the_setting_does_not_run_an_untrusted_name(
        service, tmp_path):
    # A job from an older version, or added while the module was trusted.
    marker = tmp_path / 'owned'
    service.trustedModules = ['os']
    jobid = service.add('os.system', 'touch %s' % marker, now=0)
    account = Account()
    service.trustedModules = ['os', Account.__module__]
    methodjob = service.add(account.credit, 7, now=0)
    del service.trustedModules        # back to the default: nothing trusted
    assert service.trustedModules == ()
    service.process(now=1)
    assert not marker.exists()
    assert service.getStatus(jobid) == 'error'
    assert 'trustedModules' in service.getError(jobid)
    assert service.getStatus(methodjob) == 'error'
    assert account.balance == 0


def test_a_worker_fails_an_untrusted_job_instead_of_passing_it_on(db):
    # A task that a worker does not know is given back for another worker;
    # an untrusted one is never run by any worker: it fails at once.
    from zodbtasks.processor import SimpleProcessor
    with db.transaction() as conn:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        service.trustedModules = ['os']
        jobid = service.add('os.getpid')
        service.trustedModules = ()
    SimpleProcessor(db, 'tasks', untilIdle=True, waitTime=0.01)()
    with db.transaction() as conn:
        job = conn.root()['tasks'].jobs[jobid]
        assert (job.status, job.waitingForTask) == ('error', None)
        assert 'trustedModules' in job.error
