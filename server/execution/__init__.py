"""Job execution: everything between a PENDING row and its outcome.

In the server process: ``dispatcher.py`` (the claim loop, leases, heartbeats) and
``executor.py`` (submits Ray tasks, reads the cluster), ``evaluation.py`` (a model version
scored on Ray) and ``clusters.py`` (the cluster registry). In a Ray worker process:
``tasks.py`` (the task bodies) with ``adapters.py`` (the pipeline's ports over PostgreSQL),
``runtime.py`` (the worker process's event loop and engines) and ``guard.py`` (the task
stops itself when its attempt is over). Both sides share ``payloads.py`` (what travels to a
task) and ``artifacts.py`` (the one owner of the artifact layout).

Imports storage/ and trainers/, never server.api or protobuf.
"""
