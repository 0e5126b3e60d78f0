"""The dashboard's changes: an action on one job, on many jobs at once,
and pausing or resuming the service.

Each is a POST whose CSRF token is checked first; it commits in a
transaction of its own, then logs, then redirects (or shows what a bulk
action did).
"""
import logging

from zodbtasks import interfaces
from zodbtasks.dashboard import jobinfo
from zodbtasks.dashboard import web
from zodbtasks.dashboard.web import HTTPError

log = logging.getLogger('zodbtasks.dashboard')

#: Most jobs one bulk action may change.
MAX_BULK = 1000


def apply(service, jobid, action, clock):
    """Do ``action`` to a job, at ``clock()``; ValueError says why it does
    not apply."""
    method = jobinfo.ACTIONS[action][1]
    status = service.jobs[jobid].status
    if method == 'cancel' and status in interfaces.FINISHED:
        # The service would change nothing: say so.
        raise ValueError('it has finished already (%s)' % status)
    if method == 'pause':
        service.pause(jobid)
    elif method == 'startJob':
        if not service.startJob(jobid, now=clock()):
            raise ValueError('only a job waiting to be started can be '
                             'started; this one is %s' % status)
    else:
        getattr(service, method)(jobid, now=clock())


def bulk_request(request):
    """(action, job ids) of a bulk action's form, checked."""
    action = request.POST.get('action', '')
    if action not in jobinfo.BULK_ACTIONS:
        raise HTTPError(400, 'action must be one of %s, not %r.' % (
            ', '.join(jobinfo.BULK_ACTIONS), action))
    ids = []
    for text in request.POST.getall('job'):
        text = text.strip()
        if not web.is_id(text):
            raise HTTPError(400, 'job must be job ids (whole numbers), '
                            'not %r.' % text)
        if int(text) not in ids:
            ids.append(int(text))
    if not ids:
        raise HTTPError(400, 'Select at least one job.')
    if len(ids) > MAX_BULK:
        raise HTTPError(400, 'At most %d jobs at once, not %d.'
                        % (MAX_BULK, len(ids)))
    return action, ids


class Actions:
    """The changes, each a method of the request.

    ``sessions`` checks the CSRF token, ``transact`` runs work on the
    service, ``render`` fills the templates and ``clock()`` gives the
    ``now`` of every change.
    """

    def __init__(self, sessions, transact, render, clock):
        self.sessions = sessions
        self.transact = transact
        self.render = render
        self.clock = clock

    def job(self, request, jobid, action):
        self.sessions.check(request)

        def work(service):
            web.existing_job(service, jobid)
            try:
                apply(service, jobid, action, self.clock)
            except ValueError as error:
                raise HTTPError(409, 'Cannot %s job %d: %s' % (
                    jobinfo.ACTIONS[action][0].lower(), jobid, error)) \
                    from None
        self.transact(work, write=True)
        log.info('%s job %d', action, jobid)
        return web.redirect(web.redirect_target(
            request, web.url(request, '/job/%d' % jobid)))

    def bulk(self, request):
        self.sessions.check(request)
        action, ids = bulk_request(request)

        def work(service):
            done, skipped = [], []
            for jobid in ids:
                if jobinfo.lookup(service, jobid) is None:
                    skipped.append((jobid, 'no such job'))
                    continue
                try:
                    apply(service, jobid, action, self.clock)
                except ValueError as error:
                    skipped.append((jobid, str(error)))
                else:
                    done.append(jobid)
            return done, skipped
        done, skipped = self.transact(work, write=True)
        log.info('%s %d job(s), %d skipped', action, len(done), len(skipped))

        def show(service):
            return self.render.page(
                request, 'bulk.pt', 'Jobs', 'jobs', service, action=action,
                label=jobinfo.ACTIONS[action][0], done=done, skipped=skipped,
                back=web.redirect_target(request, web.url(request, '/jobs')))
        return self.transact(show)

    def service(self, request, action):
        self.sessions.check(request)

        def work(service):
            if action == 'pause':
                service.pause()
            else:
                service.resume(now=self.clock())
        self.transact(work, write=True)
        log.info('%s the service', action)
        return web.redirect(web.redirect_target(request,
                                                web.url(request, '/')))
