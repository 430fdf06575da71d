"""The local backend: a small scheduler for this machine (see ``backend``, ``queue``, ``dispatcher``, ``job``).

Why not a library: the well-kept SQLite-backed task queues (huey, for one) need a resident consumer and run
tasks in its worker threads or processes; none ends a job's whole process session, treats a job as alive
while any of its processes lives, releases work on DONE markers, or exits when idle. That part is small, so
it is here.
"""



def __getattr__(name: str):
    # lazy, so `python -m llmjobs.cluster.backends.local.dispatcher` does not import itself twice
    if name in ("LocalBackend", "LocalOptions"):
        from llmjobs.cluster.backends.local import backend

        return getattr(backend, name)
    raise AttributeError(name)
