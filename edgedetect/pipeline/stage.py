"""The thread behind each pipeline stage, with an explicit start, stop and join."""

from __future__ import annotations

import threading


class StageThread:
    """Subclasses implement `_run`, which returns soon after `self._stop` is set."""

    def __init__(self, name: str):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
