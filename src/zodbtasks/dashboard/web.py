"""The HTTP pieces the dashboard's parts share: its error, URLs, redirects
and the checks of numbers given in a request."""
import json
import urllib.parse

import webob

from zodbtasks.dashboard import jobinfo

#: Most digits of a job id (or other whole number) a request may give.
ID_DIGITS = 20


class HTTPError(Exception):
    """End a request with an error page."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def whole_number(text, name, low, high):
    """``text`` as an int in [low, high]; HTTPError 400 otherwise."""
    if not (text.isascii() and text.isdigit()) or len(text) > ID_DIGITS \
            or not low <= int(text) <= high:
        raise HTTPError(400, '%s must be a whole number from %d to %d, not '
                        '%r.' % (name, low, high, text))
    return int(text)


def is_id(text):
    """Whether ``text`` has the form of a job id."""
    return text.isascii() and text.isdigit() and len(text) <= ID_DIGITS


def url(request, path, **query):
    """The URL of ``path`` in this app, with the query's non-empty values."""
    found = request.script_name + path
    query = {k: v for k, v in query.items() if v not in (None, '')}
    if query:
        found += '?' + urllib.parse.urlencode(query)
    return found


def redirect_target(request, default):
    """Where to go after a change: a path of this app, or ``default``."""
    target = request.POST.get('next', '')
    if (isinstance(target, str) and target.startswith('/')
            and not target.startswith('//') and '\\' not in target
            and not any(ord(c) < 32 for c in target)):
        return request.script_name + target
    return default


def redirect(location):
    """A 303 response to ``location``."""
    response = webob.Response(status=303)
    response.location = location
    return response


def json_response(data):
    """A response of ``data`` as JSON, its keys sorted."""
    response = webob.Response(content_type='application/json',
                              charset='utf-8')
    response.text = json.dumps(data, sort_keys=True)
    return response


def existing_job(service, jobid):
    """The job ``jobid`` of ``service``; HTTPError 404 if there is none."""
    job = jobinfo.lookup(service, jobid)
    if job is None:
        raise HTTPError(404, 'No job has the id %r (it may have been '
                        'cleaned away).' % jobid)
    return job
