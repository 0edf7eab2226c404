"""Temperature and throttling from sysfs. The root is configurable so tests use a fake tree;
files that are absent are left out, never guessed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TEMP_FILE = "class/thermal/thermal_zone0/temp"
THROTTLED_FILE = "devices/platform/soc/soc:firmware/get_throttled"

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
