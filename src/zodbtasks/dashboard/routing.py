"""Which part answers a path and method: the URLs of the dashboard.

====================  ======  ===========================
path                  method  answered by
====================  ======  ===========================
``/``                 GET     the overview
``/jobs``             GET     the job list
``/workers``          GET     the workers
``/job/ID``           GET     one job
``/job/ID/ACTION``    POST    an action on the job
``/jobs/bulk``        POST    an action on many jobs
``/service/pause``    POST    pause the service
``/service/resume``   POST    resume it
``/api/counts``       GET     the counts, JSON
``/metrics``          GET     Prometheus metrics
``/static/NAME``      GET     the script and style sheet
====================  ======  ===========================

HEAD is answered as GET; another method gets 405, another path 404.
"""
from zodbtasks.dashboard import jobinfo
from zodbtasks.dashboard import render
from zodbtasks.dashboard import web
from zodbtasks.dashboard.web import HTTPError


def is_api(path):
    """Whether ``path`` is for programs, which get errors as JSON."""
    return path.startswith('/api/') or path == '/metrics'


class Router:
    """Hand a request to the method of `pages`, `api` or `actions` that
    its path names."""

    def __init__(self, pages, api, actions):
        self.pages = pages
        self.api = api
        self.actions = actions
        self.get = {(): pages.overview, ('jobs',): pages.jobs,
                    ('workers',): pages.workers, ('api', 'counts'): api.counts,
                    ('metrics',): api.metrics}

    def dispatch(self, request, path):
        """The response to ``request`` for ``path``; HTTPError if none."""
        parts = [p for p in path.split('/') if p]
        method = 'GET' if request.method == 'HEAD' else request.method
        handler = self.get.get(tuple(parts))
        if handler is not None:
            return only(method, 'GET', lambda: handler(request))
        if parts == ['jobs', 'bulk']:
            return only(method, 'POST', lambda: self.actions.bulk(request))
        if len(parts) == 2 and parts[0] == 'static' \
                and parts[1] in render.STATIC:
            return only(method, 'GET', lambda: render.static(parts[1]))
        if len(parts) == 2 and parts[0] == 'service' \
                and parts[1] in ('pause', 'resume'):
            return only(method, 'POST',
                        lambda: self.actions.service(request, parts[1]))
        if len(parts) in (2, 3) and parts[0] == 'job':
            jobid = path_jobid(parts[1])
            if len(parts) == 2:
                return only(method, 'GET',
                            lambda: self.pages.job(request, jobid))
            if parts[2] in jobinfo.ACTIONS:
                return only(method, 'POST', lambda: self.actions.job(
                    request, jobid, parts[2]))
        raise HTTPError(404, 'There is no page at %s.' % path)


def only(method, allowed, handler):
    """``handler()`` if ``method`` is ``allowed``; HTTPError 405 if not."""
    if method != allowed:
        raise HTTPError(405, '%s is not allowed here.' % method,
                        {'Allow': allowed + (', HEAD' if allowed == 'GET'
                                             else '')})
    return handler()


def path_jobid(text):
    """The job id in a path; HTTPError 404 if it cannot be one."""
    if not web.is_id(text):
        raise HTTPError(404, 'No job has the id %r: an id is a whole '
                        'number.' % text)
    return int(text)
