"""SIGINT/SIGTERM during training: a flag the loop checks after each step."""

from __future__ import annotations

import signal
import threading


class SignalCatcher:
    """Turns SIGINT/SIGTERM into `caught` (the signal number) while the block runs; a second
    signal stops at once (KeyboardInterrupt). Only in the main thread (signals go there)."""

    def __init__(self):
        self.caught: int | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.caught is not None:
            raise KeyboardInterrupt
        self.caught = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
