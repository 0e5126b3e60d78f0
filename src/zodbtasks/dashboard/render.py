"""What the dashboard sends back: pages from its templates, error pages and
its static files.

Pages are Chameleon page templates (``templates/*.pt``), which escape every
value unless told otherwise; no template here is told otherwise.
"""
import json
import os

import webob
from chameleon import PageTemplateLoader

from zodbtasks.dashboard import jobinfo
from zodbtasks.dashboard import web
from zodbtasks.dashboard.csrf import TOKEN_FIELD
from zodbtasks.dashboard.formats import Format

HERE = os.path.dirname(os.path.abspath(__file__))

TEMPLATES = PageTemplateLoader(os.path.join(HERE, 'templates'), '.pt')

#: The static files: name -> content type.
STATIC = {
    'dashboard.js': 'application/javascript',
    'dashboard.css': 'text/css',
}

#: The environ keys the request handler sets for the renderer: the
#: browser's session, and whether the request is for the API.
SESSION_KEY = 'zodbtasks.session'
API_KEY = 'zodbtasks.api'


class Renderer:
    """Fill the templates: each page gets the layout, the CSRF token of
    the request's session and the values common to every page."""

    def __init__(self, sessions, clock, service_path, poll_seconds):
        self.sessions = sessions
        self.clock = clock
        self.service_path = service_path
        self.poll_seconds = poll_seconds

    def page(self, request, template, title, section, service=None,
             status=200, **values):
        """The response of ``template`` filled with ``values``."""
        here = request.path_info + ('?' + request.query_string
                                    if request.query_string else '')
        session = request.environ[SESSION_KEY]
        now = self.clock()

        def url(path, **query):
            return web.url(request, path, **query)
        page = TEMPLATES[template](
            layout=TEMPLATES['layout.pt'], macros=TEMPLATES['macros.pt'],
            title=title, section=section, url=url, here=here,
            token=self.sessions.token(session), token_field=TOKEN_FIELD,
            service_path=self.service_path,
            paused=bool(service.paused) if service is not None else None,
            poll_seconds=self.poll_seconds, fmt=Format(now), now=now,
            actions=jobinfo.ACTIONS, **values)
        response = webob.Response(content_type='text/html', charset='utf-8',
                                  status=status)
        response.text = page
        return response

    def error(self, request, error):
        """The response of an `HTTPError`: JSON for the API, else a page."""
        if request.environ.get(API_KEY):
            response = webob.Response(content_type='application/json',
                                      charset='utf-8')
            response.text = json.dumps({'error': error.message})
        else:
            response = webob.Response(content_type='text/html',
                                      charset='utf-8')
            response.text = TEMPLATES['error.pt'](
                status=webob.Response(status=error.status).status,
                message=error.message,
                home=request.script_name + '/')
        response.status = error.status
        for name, value in error.headers.items():
            response.headers[name] = value
        return response


def static(name):
    """The response of the static file ``name`` (a key of `STATIC`)."""
    with open(os.path.join(HERE, 'static', name), 'rb') as f:
        body = f.read()
    return webob.Response(body=body, content_type=STATIC[name],
                          charset='utf-8')
