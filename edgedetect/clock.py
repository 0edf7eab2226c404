"""The one clock every stage reads: monotonic seconds, immune to wall-clock steps (NTP on a Pi
without an RTC jumps by years at boot)."""

import time

now = time.monotonic


def wall() -> float:
    """Wall-clock seconds since the epoch, only for timestamps shown to people and other programs."""
    return time.time()
