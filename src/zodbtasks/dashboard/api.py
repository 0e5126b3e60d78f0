"""What the dashboard answers to programs: ``/api/counts`` (JSON, which the
pages poll) and ``/metrics`` (Prometheus)."""
import webob

from zodbtasks.dashboard import web
from zodbtasks.dashboard.pages import status_counts


class Api:
    """The JSON counts and the metrics of the service.

    ``transact`` runs work on the service, ``clock()`` gives the time and
    ``recent_limit`` is how many finished jobs of each outcome the metrics
    read.
    """

    def __init__(self, transact, clock, recent_limit):
        self.transact = transact
        self.clock = clock
        self.recent_limit = recent_limit
        self._metrics = None

    def counts(self, request):
        """The jobs by status, their total, and whether the service is
        paused, as of ``time``."""
        def work(service):
            counts = status_counts(service.jobCounts())
            return {'counts': counts, 'total': sum(counts.values()),
                    'paused': bool(service.paused), 'time': self.clock()}
        return web.json_response(self.transact(work))

    def metrics(self, request):
        """The metrics, in the format the request's Accept asks for."""
        from prometheus_client.exposition import choose_encoder

        from zodbtasks.metrics import make_registry
        if self._metrics is None:
            self._metrics = make_registry(self.transact, self.clock,
                                          self.recent_limit)
        encoder, content_type = choose_encoder(
            request.headers.get('Accept', ''))
        response = webob.Response(body=encoder(self._metrics))
        response.headers['Content-Type'] = content_type
        return response
