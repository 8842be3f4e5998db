"""A background thread that calls one function at a fixed interval until stopped.

Each serving replica runs one to follow the shared state (new items, the champion pointer).
A call that fails is logged and the next one tries again: a database that is away for a while
must not stop a replica's updates for good, nor flood its log (one line a minute while failing).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)
QUIET_S = 60.0  # while calls keep failing, one log line per this many seconds


class Poller:
    """Calls `poll()` every `interval_s` seconds on a daemon thread until `stop()`.

    Args:
        first: called once when the thread starts, before the first interval (e.g. a warm-up).
    """

    def __init__(self, poll: Callable[[], Any], interval_s: float, name: str = "fusionrec-state-poller",
                 first: Callable[[], Any] | None = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0 seconds, got {interval_s}")
        self.poll, self.interval_s, self.first = poll, interval_s, first
        self.calls = self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._last_log = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the thread to end and wait for a call in progress (up to timeout seconds)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        if self.first is not None:
            try:
                self.first()
            except Exception:  # a failed warm-up costs the first request time, nothing more
                logger.exception("poller warm-up failed")
        while not self._stop.wait(self.interval_s):
            self.calls += 1
            try:
                self.poll()
            except Exception as exc:  # any failure: keep serving what we have, try again next time
                self.failures += 1
                now = time.monotonic()
                if now - self._last_log >= QUIET_S:
                    self._last_log = now
                    logger.warning("shared state poll failed (%d failures so far), retrying every %.1f s: %s",
                                   self.failures, self.interval_s, exc, exc_info=self.failures == 1)
