"""A minimal sd_notify client: tells systemd READY, WATCHDOG, STATUS, STOPPING.

The protocol is one datagram of `KEY=value` lines to the AF_UNIX socket named by
NOTIFY_SOCKET (a path, or `@name` for the abstract namespace). Without NOTIFY_SOCKET every
call is a silent no-op, so the daemon runs the same outside systemd.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def _address(env: Mapping[str, str]) -> str | None:
    addr = env.get("NOTIFY_SOCKET", "")
    if not addr:
        return None
    if addr.startswith("@"):
        return "\0" + addr[1:]  # abstract namespace
    if addr.startswith("/"):
        return addr
    return None  # vsock: and other transports: not used on a Pi


def notify(*lines: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `lines` as one message; True if it was sent. Never raises: a lost status
    message must not take the daemon down (systemd notices missing pings by itself)."""
    addr = _address(os.environ if env is None else env)
    if addr is None or not lines:
        return False
    data = "\n".join(lines).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(data, addr)
        return True
    except OSError:
        return False


def enabled(env: Mapping[str, str] | None = None) -> bool:
    return _address(os.environ if env is None else env) is not None


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC, as sd_watchdog_enabled
    advises), or None when systemd did not ask for them (or asked another process)."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return usec / 2e6 if usec > 0 else None


def status_text(text: str) -> str:
    """A STATUS= line; the message is line-based, so newlines are flattened."""
    return "STATUS=" + " ".join(text.split())


def ready(status: str = "", env: Mapping[str, str] | None = None) -> bool:
    return notify("READY=1", *([status_text(status)] if status else []), env=env)




def stopping(env: Mapping[str, str] | None = None) -> bool:
    return notify("STOPPING=1", status_text("stopping"), env=env)


def extend_timeout(seconds: float, what: str = "", env: Mapping[str, str] | None = None) -> bool:
    """Ask systemd for `seconds` more before the start (or stop) timeout fires; call it
    before each slow step (model download, model load)."""
    lines = [f"EXTEND_TIMEOUT_USEC={max(1, int(seconds * 1e6))}"]
    if what:
        lines.append(status_text(what))
    return notify(*lines, env=env)
