"""Temperature and throttling from sysfs. The root is configurable so tests use a fake tree;
files that are absent are left out, never guessed. ThrottleLog turns the readings into log
lines on change only: a WARNING when a flag appears, an INFO when it clears."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("edgedetect.system.health")

TEMP_FILE = "class/thermal/thermal_zone0/temp"
THROTTLED_FILE = "devices/platform/soc/soc:firmware/get_throttled"
MODEL_FILE = "firmware/devicetree/base/model"  # "Raspberry Pi 4 Model B Rev 1.4" on a Pi

# Bits of the firmware's get_throttled word (Raspberry Pi documentation, vcgencmd get_throttled).
THROTTLE_FLAGS = {
    0: "under_voltage",
    1: "freq_capped",
    2: "throttled",
    3: "soft_temp_limit",
    16: "under_voltage_occurred",
    17: "freq_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}


@dataclass(frozen=True, slots=True)
class Thermal:
    temperature_c: float | None
    throttled: int | None

    @property
    def flags(self) -> list[str]:
        if self.throttled is None:
            return []
        return [name for bit, name in THROTTLE_FLAGS.items() if self.throttled >> bit & 1]


class SysfsReader:
    def __init__(self, root: str | Path = "/sys"):
        self.root = Path(root)

    def _read(self, rel: str) -> str | None:
        try:
            return (self.root / rel).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None

    def is_raspberry_pi(self) -> bool:
        try:
            return b"Raspberry Pi" in (self.root / MODEL_FILE).read_bytes()
        except OSError:
            return False

    def read(self) -> Thermal:
        temp = throttled = None
        raw = self._read(TEMP_FILE)
        if raw:
            try:
                temp = int(raw) / 1000.0
            except ValueError:
                temp = None
        raw = self._read(THROTTLED_FILE)
        if raw:
            try:
                throttled = int(raw, 16)
            except ValueError:
                throttled = None
        return Thermal(temp, throttled)


OCCURRED = "_occurred"
# The flags that say "now" (the sticky *_occurred bits say "at some time since boot").
NOW_FLAGS = tuple(name for name in THROTTLE_FLAGS.values() if not name.endswith(OCCURRED))
FLAG_TEXT = {
    "under_voltage": ("under-voltage", "the supply dropped below 4.63 V; use a 5.1 V 3 A supply and a short, "
                      "thick cable (the camera and USB devices draw from it too)"),
    "freq_capped": ("ARM frequency capped", "the CPU runs slower because of heat or low voltage"),
    "throttled": ("throttled", "the CPU is slowed down: improve cooling (heatsink, fan) or the power supply"),
    "soft_temp_limit": ("soft temperature limit", "the SoC is hot enough to be slowed down: improve cooling"),
}


class ThrottleLog:
    """Logs each throttling condition when it starts (WARNING) and when it ends (INFO), once,
    however often the word is read. A sticky *_occurred bit whose condition was never seen now
    (it came and went between readings, or before the daemon started) gets one WARNING."""

    def __init__(self, logger: logging.Logger = log):
        self._log = logger
        self._lock = threading.Lock()
        self._now: frozenset[str] = frozenset()
        self._told: set[str] = set()  # conditions warned about in this run, now or past

    def update(self, thermal: Thermal) -> None:
        if thermal.throttled is None:
            return
        flags = set(thermal.flags)
        now = frozenset(f for f in NOW_FLAGS if f in flags)
        with self._lock:
            appeared = [f for f in NOW_FLAGS if f in now - self._now]
            cleared = [f for f in NOW_FLAGS if f in self._now - now]
            past = [f for f in NOW_FLAGS if f + OCCURRED in flags and f not in now and f not in self._told]
            self._now = now
            self._told.update(appeared, past)
        word = thermal.throttled
        for f in appeared:
            name, advice = FLAG_TEXT[f]
            self._log.warning("%s: %s (throttled=%#x)", name, advice, word)
        for f in past:
            name, advice = FLAG_TEXT[f]
            self._log.warning("%s occurred since boot, not now: %s (throttled=%#x)", name, advice, word)
        for f in cleared:
            self._log.info("%s cleared (throttled=%#x)", FLAG_TEXT[f][0], word)
