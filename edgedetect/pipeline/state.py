"""The source's state: a closed set of values, the moves allowed between them, and one writer.

    starting ─▶ running ◀──▶ reconnecting ─▶ failed
                   │  ▲                        (no frame after the daemon's restarts)
                   ▼  └── (a looped file starts over)
                 ended    (a finite file or folder has finished)

Only `SourceStatus.move` changes it; a move the diagram does not allow is a bug and raises.
"""

from __future__ import annotations

import logging
import threading
from enum import StrEnum

log = logging.getLogger("edgedetect.pipeline.capture")


class SourceState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"


ALLOWED: dict[SourceState, frozenset[SourceState]] = {
    SourceState.STARTING: frozenset({SourceState.RUNNING, SourceState.RECONNECTING, SourceState.ENDED,
                                     SourceState.FAILED}),
    SourceState.RUNNING: frozenset({SourceState.RECONNECTING, SourceState.ENDED, SourceState.FAILED}),
    SourceState.RECONNECTING: frozenset({SourceState.RUNNING, SourceState.ENDED, SourceState.FAILED}),
    SourceState.ENDED: frozenset({SourceState.RUNNING}),
    SourceState.FAILED: frozenset(),
}


class SourceStatus:
    def __init__(self, name: str = "") -> None:
        self.name = name
        self._state = SourceState.STARTING
        self._lock = threading.Lock()

    @property
    def state(self) -> SourceState:
        return self._state

    def move(self, new: SourceState, quiet: bool = False) -> bool:
        """Go to `new` (logged once, unless `quiet`: a move the caller's own lines cover); False
        when already there."""
        with self._lock:
            old = self._state
            if new == old:
                return False
            if new not in ALLOWED[old]:
                raise ValueError(f"source state: {old} -> {new} is not an allowed move")
            self._state = new
        if not quiet:
            log.info("source %s: %s", self.name or "?", new)
        return True
