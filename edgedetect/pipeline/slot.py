"""A one-item mailbox between stages: the newest item wins, and items overwritten before
anyone took them are counted as dropped, so a slow consumer never works on stale frames."""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    def __init__(self, on_put: Callable[[], None] | None = None) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self._on_put = on_put  # a consumer that waits on several slots at once (the scheduler)
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify_all()
        if self._on_put is not None:
            self._on_put()

    @property
    def full(self) -> bool:
        """An item waits to be taken."""
        with self._cond:
            return self._item is not None

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item not taken yet, waiting up to `timeout`; None on timeout or close."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            self._cond.notify_all()  # a producer may be waiting for the slot to empty
            return item

    def wait_empty(self, timeout: float | None = None) -> bool:
        """Wait until the newest item was taken (or the slot closed); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._item is None or self._closed, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
