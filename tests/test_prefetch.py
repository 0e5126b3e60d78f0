"""Claims over ZEO ask for what they will read ahead, in one go.

A claim takes its jobs off the lanes and off the listing of queued jobs,
which the claims of other workers keep writing: for a worker, those are the
objects that it finds stale. Read one at a time they cost a round trip to
the server each; asked for ahead (`zodbtasks.prefetch`), the claim waits
for them once.
"""
import transaction
import zope.component

import zodbtasks
from zodbtasks import listing
from zeo_helpers import closeClient
from zeo_helpers import openClient
from zeo_helpers import zeo  # noqa: F401 (a fixture)


class LoadsOf:
    """The loads that a ZEO client's storage sends and waits for, and the
    oids it asked for ahead, while ``watched`` is set."""

    def __init__(self, storage):
        self.server = storage._server
        self.asked, self.waited = set(), []
        self.watched = None
        load, prefetch = self.server.load_before, self.server.prefetch

        def load_before(oid, tid):
            if self.watched is not None:
                self.waited.append((self.watched, oid))
            return load(oid, tid)

        def ahead(oids, tid):
            self.asked.update(oids)
            return prefetch(oids, tid)

        self.server.load_before = load_before
        self.server.prefetch = ahead

    def unasked(self, where):
        return [oid for watched, oid in self.waited
                if watched == where and oid not in self.asked]


def claim(tm, conn, now, tries=20):
    """Claim 60 jobs as a worker does: again if it conflicted (ZEO tells a
    client of the others' commits a moment after they were made)."""
    for _ in range(tries):
        try:
            with tm:
                conn.root()['tasks'].claimJobs(
                    now=now, count=60, worker=str(id(conn)), lease=600)
            return
        except transaction.interfaces.TransientError:
            pass
    raise AssertionError('every claim conflicted')


def test_a_claim_asks_ahead_for_the_listing_it_takes_its_jobs_off(
        zeo, monkeypatch):
    zope.component.provideUtility(
        zodbtasks.SimpleTask(lambda input: None), name='noop')
    clients = [openClient(zeo) for _ in range(3)]
    try:
        (db0, tm0, conn0), one, other = clients
        with tm0:
            conn0.root()['tasks'] = service = zodbtasks.TaskService()
        for _ in range(6):          # 600 jobs, in five or more buckets
            with tm0:
                service = conn0.root()['tasks']
                for _ in range(100):
                    service.add('noop', now=1000)
        loads = LoadsOf(one[0].storage)
        removing = listing.remove

        def remove(*args):
            previous, loads.watched = loads.watched, 'listing'
            try:
                return removing(*args)
            finally:
                loads.watched = previous

        monkeypatch.setattr(listing, 'remove', remove)
        for turn in range(3):
            # the other worker's claim writes the head of the listing
            for db, tm, conn in (other, one):
                claim(tm, conn, now=2000 + turn)
        assert loads.waited, 'the claims loaded nothing: no test'
        assert loads.unasked('listing') == []
    finally:
        for client in clients:
            closeClient(*client)
        transaction.abort()
