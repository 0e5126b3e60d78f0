"""A first look at zodbtasks: jobs stored in a FileStorage, run by explicit ticks.

    python examples/quickstart.py [PATH]

It opens (or creates) the database file PATH (default ``Data.fs``), registers
two tasks, adds a plain job, a delayed job and (the first time) a cron job in
one transaction, and then advances the service tick by tick with a simulated
clock, committing after each tick as a worker would. Run it twice: the second
run finds the jobs of the first one in the database, and the simulated clock
and the cron job carry on where they stopped.
"""
import sys
import time

import zope.component
import ZODB
import ZODB.FileStorage

import zodbtasks


def greet(service, jobid, input):
    job = service.jobs[jobid]
    print('  %s  greet  job %d says hello to %s'
          % (hhmmss(job.started), jobid, input))
    return 'Hello, %s!' % input


def count_runs(service, jobid, input):
    # A task changes application data in the same transaction as its job.
    root = service._p_jar.root()
    root['runs'] = root.get('runs', 0) + 1
    print('  %s  count  cron job %d, run number %d'
          % (hhmmss(service.jobs[jobid].started), jobid, root['runs']))
    return root['runs']


def hhmmss(t):
    return time.strftime('%H:%M:%S', time.gmtime(t))


def main(path='Data.fs'):
    zope.component.provideUtility(greet, zodbtasks.ITask, name='greet')
    zope.component.provideUtility(count_runs, zodbtasks.ITask, name='count')

    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    try:
        with db.transaction() as conn:
            root = conn.root()
            first_time = 'tasks' not in root
            if first_time:
                root['tasks'] = zodbtasks.TaskService()
                # The simulated clock starts on the current minute (UTC).
                root['clock'] = int(time.time()) // 60 * 60
            service = root['tasks']
            start = root['clock']
            print('%s %s: %d job(s) in it' % (
                'created' if first_time else 'opened', path,
                len(service.jobs)))

            service.add('greet', 'the world')
            service.addCronJob('greet', 'whoever waits', delay=30)
            if first_time:
                service.addCronJob('count', minute=tuple(range(0, 60, 2)))
            print('added a plain job and a delayed job (30 s)%s'
                  % (' and a cron job (every 2 minutes)' if first_time
                     else ''))

        print('ticking every 10 s from %s UTC for 5 simulated minutes:'
              % hhmmss(start))
        for now in range(start, start + 300, 10):
            with db.transaction() as conn:
                conn.root()['tasks'].process(now)
                conn.root()['clock'] = now + 10

        with db.transaction() as conn:
            statuses = {}
            for job in conn.root()['tasks'].jobs.values():
                statuses[job.status] = statuses.get(job.status, 0) + 1
            print('jobs by status:', dict(sorted(statuses.items())))
    finally:
        db.close()


if __name__ == '__main__':
    main(*sys.argv[1:2])
