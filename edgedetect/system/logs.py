"""Logging set-up: the journal with structured fields under systemd (when python3-systemd is
there), else plain lines on stderr. Under systemd those lines start with `<N>`, the syslog
priority that journald strips and stores, so `journalctl -p warning` works either way."""

from __future__ import annotations

import logging
import sys

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
