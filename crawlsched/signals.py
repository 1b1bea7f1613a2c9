"""How the outside reaches the daemon's loop: signals, the job file's watch, the web's requests.

SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR1 reads run-now requests; the watch
thread and the web API ask the same way. Each only sets a flag and wakes the loop
(``crawlsched.waker``); the loop's next turn does the work. ``Signals`` is a part of
``crawlsched.daemon.Daemon`` (mixed into it): it sets the daemon's ``stopping``,
``reload_requested`` and ``requests_pending`` and the job file's ``reloads.changed``.
"""

from __future__ import annotations

import signal
from typing import Any

__all__ = ["Signals"]


class Signals:
    """The daemon's signal handlers and requests from other threads (mixed into ``Daemon``)."""

    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR1 reads run-now requests: each only sets a flag and wakes."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, lambda _signum, _frame: self.request_reload())
        signal.signal(signal.SIGUSR1, self._on_usr1)

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True
        self.wake.set()

    def _on_file_event(self) -> None:
        """From the watch thread: the job file may have changed."""
        self.reloads.changed = True
        self.wake.set()

    def _on_usr1(self, signum: int, frame: Any) -> None:
        self.request_wake()

    def request_wake(self) -> None:
        """Another thread (the web API, a signal) left a run-now request: handle it at once."""
        self.requests_pending = True
        self.wake.set()

    def request_reload(self) -> None:
        self.reload_requested = True
        self.wake.set()
