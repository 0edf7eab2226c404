"""Logging straight to the systemd journal, with the figures as structured fields.

Each stats line carries its snapshot (report.LogSink passes `extra={"snapshot": ...}`);
here it becomes EDGEDETECT_* fields, so `journalctl -u edgedetect EDGEDETECT_SOURCE_STATE=stalled`
or `-o json` tools read numbers, not text. Needs python3-systemd (apt) or systemd-python (pip,
the `journal` extra); without it the daemon logs to stderr, which journald also stores.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Mapping
from typing import IO, Any, Callable

# syslog priorities (RFC 5424), as journald and `journalctl -p` use them.
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
DEBUG_PRIORITY = 7
IDENTIFIER = "edgedetect"

# Short names for the figures people query most; every snapshot key is also sent flattened.
ALIASES = {
    "EDGEDETECT_FPS": ("inference_fps",),
    "EDGEDETECT_INFERENCE_MS": ("inference_ms", "p50"),
    "EDGEDETECT_CPU_TEMP": ("temperature_c",),
}
_FIELD_BAD = re.compile(r"[^A-Z0-9_]")


def priority(levelno: int) -> int:
    for level, prio in PRIORITIES:
        if levelno >= level:
            return prio
    return DEBUG_PRIORITY


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def snapshot_fields(snap: Mapping[str, Any]) -> dict[str, str]:
    """A stats snapshot as journal fields: EDGEDETECT_<KEY>[_<SUBKEY>]=value."""
    fields: dict[str, str] = {}
    for key, value in snap.items():
        name = "EDGEDETECT_" + _FIELD_BAD.sub("_", str(key).upper())
        if isinstance(value, Mapping):
            for sub, v in value.items():
                fields[f"{name}_{_FIELD_BAD.sub('_', str(sub).upper())}"[:64]] = _text(v)
        else:
            fields[name[:64]] = _text(value)
    for alias, path in ALIASES.items():
        value: Any = snap
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is not None:
            fields[alias] = _text(value)
    return fields


class JournalHandler(logging.Handler):
    """A logging handler that calls `send(MESSAGE, **fields)` (systemd.journal.send's form)."""

    def __init__(self, send: Callable[..., Any], identifier: str = IDENTIFIER):
        super().__init__()
        self._send = send
        self.identifier = identifier
        self.setFormatter(logging.Formatter("%(message)s"))

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        f = {
            "PRIORITY": str(priority(record.levelno)),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
            "THREAD_NAME": record.threadName or "",
            "CODE_FILE": record.pathname,
            "CODE_LINE": str(record.lineno),
            "CODE_FUNC": record.funcName,
        }
        snap = getattr(record, "snapshot", None)
        if isinstance(snap, Mapping):
            f.update(snapshot_fields(snap))
        if record.exc_info and record.exc_info[0] is not None:
            f["EXCEPTION"] = "".join(traceback.format_exception_only(*record.exc_info[:2])).strip()
        return f

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(self.format(record), **self.fields(record))
        except Exception:  # noqa: BLE001 - logging must never raise into the pipeline
            self.handleError(record)


def stderr_is_journal(stream: IO[Any] | None = None, env: Mapping[str, str] | None = None) -> bool:
    """True when stderr is the journal stream systemd connected (JOURNAL_STREAM=dev:ino)."""
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    want = env.get("JOURNAL_STREAM", "")
    if not want or stream is None:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


def journal_send() -> Callable[..., Any] | None:
    try:
        from systemd import journal
    except ImportError:
        return None
    return journal.send


def install_journal_handler(root: logging.Logger | None = None, stream: IO[Any] | None = None,
                            env: Mapping[str, str] | None = None,
                            send: Callable[..., Any] | None = None) -> bool:
    """Replace the root logger's handlers with a JournalHandler when stderr goes to the
    journal and systemd.journal imports; otherwise change nothing and return False."""
    if not stderr_is_journal(stream, env):
        return False
    send = send or journal_send()
    if send is None:
        return False
    root = root or logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(JournalHandler(send))
    return True
