"""The failed-login limit: so many failures per minute for one account from one source.

An attempt is counted when it *starts*, before its credentials are checked, and handed back only if it
succeeds. So 200 concurrent wrong passwords against a limit of 10 get 10 checks and 190 refusals, and a
caller that disconnects mid-check keeps its failure.

The key is (source, account): the source is the peer's IP address, or ``unix:<uid>`` on the unix socket
(so each local user is a source of its own there); the account is the user name tried, the API key's id
or "token". One caller hammering one account therefore cannot lock other accounts out, even from the same
address. Windows whose newest attempt is over a minute old are swept whenever the table has doubled.
"""

from __future__ import annotations

import time
from collections import deque

WINDOW = 60.0
_MIN_SWEEP = 1024

Attempt = tuple[tuple[str, str], float]


class LoginLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._sweep_at = _MIN_SWEEP

    def __len__(self) -> int:
        return len(self._windows)

    def begin(self, source: str, account: str) -> Attempt | None:
        """Count one attempt at ``account`` from ``source``; None (not counted) once the minute's are used."""
        now = time.monotonic()
        key = (source, account)
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= self._sweep_at:
                self._sweep(now - WINDOW)
            window = self._windows[key] = deque()
        else:
            cutoff = now - WINDOW
            while window and window[0] < cutoff:
                window.popleft()
        if len(window) >= self.per_minute:
            return None
        window.append(now)
        return key, now

    def counted(self, source: str, account: str) -> int:
        """Attempts at ``account`` from ``source`` that count now (failed or still being checked)."""
        cutoff = time.monotonic() - WINDOW
        return sum(1 for stamp in self._windows.get((source, account), ()) if stamp >= cutoff)

    def succeeded(self, attempt: Attempt) -> None:
        """A successful login does not count against its account."""
        key, stamp = attempt
        window = self._windows.get(key)
        if window is None:
            return
        try:
            window.remove(stamp)
        except ValueError:  # already swept out of the window
            pass
        if not window:
            del self._windows[key]

    def _sweep(self, cutoff: float) -> None:
        stale = [key for key, window in self._windows.items() if not window or window[-1] < cutoff]
        for key in stale:
            del self._windows[key]
        self._sweep_at = max(_MIN_SWEEP, 2 * len(self._windows))
