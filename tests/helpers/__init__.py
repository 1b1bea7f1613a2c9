"""Helpers shared by the test modules, in one place (the fixtures are in tests/conftest.py).

- ``clock``    a fake wall and monotonic clock, and instants as text
- ``jobs``     ``write_jobs``: the one way a test writes a job file
- ``history``  ``runs``/``rows``: the one history reader, through the state store's public methods
- ``loop``     the daemon's loop in-process: ``make_daemon``, ``run_until`` with a fake clock
- ``process``  the real daemon and CLI as subprocesses, with real signals; ``wait_for``
- ``servers``  real HTTP targets on 127.0.0.1 (a free port each)
- ``files``    a snapshot of a folder tree
- ``postgres`` a throwaway PostgreSQL cluster (initdb in /tmp, a loopback port, stopped by pid)

``tests/`` is on ``sys.path`` (pytest's rootdir-relative import of test modules without
``__init__.py``; ``tests/reliability/conftest.py`` adds it for that folder), so a test
imports ``from helpers.process import DaemonProcess``.
"""
