"""What every source provides: open, read one picture, close."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import numpy as np

from edgedetect.frames import EncodedPacket


@dataclass(slots=True)
class Capture:
    """One picture from a source: BGR for display, plus RGB for inference when the
    camera's ISP already made a small one (picamera2's lores stream)."""

    image: np.ndarray
    lores: np.ndarray | None = None
    packets: tuple[EncodedPacket, ...] = ()  # compressed packets of the recorded stream since the last read
    packets_dropped: int = 0  # of that stream, packets lost since the last read (unread too long: a gap in clips)


class Source(Protocol):
    name: str
    live: bool  # a camera or stream (frames are lost if not read) rather than a file

    def open(self) -> None: ...

    def read(self) -> Capture | None:
        """The next picture; None when a finite source has ended. Raises SourceError on failure.

        Bounded: bad input (unreadable files, corrupt stream parts) is skipped or raised, never
        looped over; a source that can block has timeouts. A source may also have
        `interrupt()`, called from another thread when capture stops (CaptureThread.stop):
        read() then returns promptly (None), pacing sleeps and network waits included."""
        ...

    def close(self) -> None: ...

    @property
    def fps(self) -> float | None:
        """Nominal frame rate, when the source knows it."""
        ...


def redact(url: str) -> str:
    """The URL with its password, if any, replaced by ***: how a source names itself in logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
