"""Fan-out to the sinks of one stage: each listener is called in turn on the stage's thread, and
one listener's exception stops neither the stage nor the other listeners (logged once, counted)."""

from __future__ import annotations

import logging
from typing import Callable, Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger("edgedetect.pipeline")


class Listeners(Generic[T]):
    def __init__(self, what: str) -> None:
        self._what = what  # "result listener", "frame listener": for the log line
        self._fns: list[Callable[[T], None]] = []
        self.errors = 0

    def add(self, fn: Callable[[T], None]) -> None:
        self._fns.append(fn)

    def __call__(self, item: T) -> None:
        for fn in self._fns:
            try:
                fn(item)
            except Exception:  # noqa: BLE001 - a broken sink must not stop the stage or the others
                self.errors += 1
                if self.errors == 1:
                    log.exception("%s %r failed (further failures counted)", self._what, fn)
