"""Ctrl-C / SIGTERM as a request the main loop polls, not an exception raised wherever it lands.

Python's default SIGINT handler raises KeyboardInterrupt at whatever bytecode the main thread is
running, including inside ``with lock:`` right after the lock is taken and before its release is
guaranteed (CPython gh-74174). In a process with worker threads (a training loop's data
pipeline, a ROS node's executor pool) that lock then stays taken, the workers block on it, and the
shutdown that joins them never returns. Recording the signal and stopping at a point the loop
chooses avoids that; a second Ctrl-C still raises, to abort a stop that takes too long.
"""
from __future__ import annotations

import signal
from typing import Callable


class StopRequest:
    """SIGINT and SIGTERM set ``requested`` (``announce(signal name)`` says so); a second Ctrl-C
    raises KeyboardInterrupt. ``close()`` restores the handlers found before."""

    def __init__(self, announce: Callable[[str], None] | None = None):
        self.signal_name: str | None = None
        self._announce = announce
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum, _frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        if self._announce is not None:
            self._announce(self.signal_name)

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
