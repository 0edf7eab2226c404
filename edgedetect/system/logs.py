"""Logging set-up: the journal with structured fields under systemd (when python3-systemd is
there), else plain lines on stderr. Under systemd those lines start with `<N>`, the syslog
priority that journald strips and stores, so `journalctl -p warning` works either way.
`RepeatedFailures` keeps a failure that recurs without end to a few lines."""

from __future__ import annotations

import logging
import sys

from edgedetect import clock
from edgedetect.system.journal import install_journal_handler, priority, stderr_is_journal


class PriorityFormatter(logging.Formatter):
    """`<4>WARNING edgedetect: ...`: the prefix journald parses (sd-daemon(3))."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{priority(record.levelno)}>"
        # A traceback spans lines; journald reads each line as its own entry.
        return "\n".join(prefix + line for line in text.splitlines())


def setup_logging(debug: bool = False) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if install_journal_handler(root):
        return
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(levelname)s %(name)s: %(message)s"
    handler.setFormatter(PriorityFormatter(fmt) if stderr_is_journal() else logging.Formatter(fmt))
    root.addHandler(handler)


class RepeatedFailures:
    """The log of a failure that may recur without end (a camera that drops every connection):
    each distinct reason in full the first time, then, while failures go on, one summary line at
    most every `period_s`, and one line once things have worked for `settle_s`. Hundreds of
    identical lines a minute would bury everything else, and past journald's rate limit, lose it."""

    DISTINCT_REASONS = 5  # said in full per run of failures; more (varied garbage) only in summaries

    def __init__(self, logger: logging.Logger, subject: str, period_s: float = 60.0, settle_s: float = 10.0):
        self.log = logger
        self.subject = subject  # what the summary lines are about, e.g. "source rtsp://cam/1"
        self.period_s = period_s
        self.settle_s = settle_s
        self._said: list[str] = []  # reasons logged in full in this run
        self._attempts = 0  # failures in this run
        self._unsaid = 0  # failures not logged in full since the last summary
        self._first_t = self._said_t = 0.0  # this run's first failure; its last summary (or first failure)
        self._ok_since: float | None = None

    @property
    def failing(self) -> bool:
        """In a run of failures: the first was logged, and nothing has worked long enough since."""
        return self._attempts > 0

    def failed(self, reason: str, then: str = "") -> None:
        """A failure: `reason` + `then` logged if the reason is new in this run, else counted."""
        t = clock.now()
        self._ok_since = None
        if not self._attempts:
            self._first_t = self._said_t = t
        self._attempts += 1
        if reason not in self._said and len(self._said) < self.DISTINCT_REASONS:
            self._said.append(reason)
            self.log.warning("%s%s", reason, then)
            return
        self._unsaid += 1
        if t - self._said_t >= self.period_s:
            self.log.warning("%s: still failing: %d attempts in the last %.0f s (%s)", self.subject, self._unsaid,
                             t - self._said_t, reason)
            self._said_t, self._unsaid = t, 0

    def succeeded(self) -> None:
        """Something worked; called often (every frame), so it costs nothing outside a run."""
        if not self._attempts:
            return
        t = clock.now()
        if self._ok_since is None:
            self._ok_since = t
        if t - self._ok_since >= self.settle_s:
            self.log.info("%s: recovered after %d failed attempts in %.0f s", self.subject, self._attempts,
                          self._ok_since - self._first_t)
            self._said.clear()
            self._attempts = self._unsaid = 0
            self._ok_since = None
