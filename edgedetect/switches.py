"""Per-camera switches, set over MQTT and kept over restarts: `detect`, `motion`, `snapshots`,
`recordings`, each ON or OFF.

A switch can only take away: ON means "as the config says", OFF turns that part off for the
camera (detect: no inference; motion: no motion gating, every frame a candidate; snapshots: no
MQTT snapshot; recordings: nothing of the camera kept in the store). A switch never turns on
what the config leaves off.

The pipeline, messaging and storage each read the one object the daemon makes; none of them
imports another for it. `on()` is a set lookup, cheap enough for every frame, from any thread.
Every change is written at once to a small JSON state file (temporary file, fsync, rename); a
file that cannot be written costs one warning, and the switches go on working in memory.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Iterable

from edgedetect.system.files import write_atomic

log = logging.getLogger("edgedetect.switches")

SWITCHES = ("detect", "motion", "snapshots", "recordings")
STATE_MAX_BYTES = 64 * 1024  # a file larger than this is not a state file of ours


class Switches:
    """The switches of `cameras`, all ON unless the state file at `path` says otherwise. A
    camera or switch not named here is ON."""

    names = SWITCHES

    def __init__(self, cameras: Iterable[str] = (), path: str | Path | None = None):
        self.cameras = tuple(cameras)
        self.path = Path(path).expanduser() if path else None
        self._lock = threading.Lock()  # one writer at a time; readers take the set whole
        self._save_lock = threading.Lock()  # saves in the order of their changes
        self._off: frozenset[tuple[str, str]] = frozenset()
        self.save_failures = 0  # changes the state file could not keep (a fault survived and counted)
        if self.path is not None:
            self._off = self._load(self.path)

    def on(self, camera: str, switch: str) -> bool:
        return (camera, switch) not in self._off

    def states(self, camera: str) -> dict[str, bool]:
        off = self._off
        return {s: (camera, s) not in off for s in SWITCHES}

    def set(self, camera: str, switch: str, on: bool) -> bool:
        """Turn one switch ON or OFF; True when that changed it. Raises KeyError for a camera or
        switch that does not exist."""
        if camera not in self.cameras:
            raise KeyError(f"no camera {camera!r}")
        if switch not in SWITCHES:
            raise KeyError(f"no switch {switch!r}")
        key = (camera, switch)
        with self._lock:
            if (key not in self._off) == on:
                return False
            self._off = self._off - {key} if on else self._off | {key}
        self._save()
        return True

    def as_json(self) -> dict[str, dict[str, bool]]:
        off = self._off
        return {cam: {s: (cam, s) not in off for s in SWITCHES} for cam in self.cameras}

    def _save(self) -> None:
        if self.path is None:
            return
        with self._save_lock:
            data = json.dumps({"cameras": self.as_json()}, indent=1).encode() + b"\n"
            try:
                write_atomic(self.path, data)
            except OSError as e:
                self.save_failures += 1
                if self.save_failures == 1:
                    log.warning("switches: cannot write %s (%s); they work but are not kept over a restart "
                                "(expected a writable file: set [mqtt] state_file)", self.path,
                                e.strerror or e)

    def _load(self, path: Path) -> frozenset[tuple[str, str]]:
        """The switches the file turns OFF. A missing file is all ON; an unreadable or malformed
        one is one warning and all ON (it is written whole at the next change)."""
        try:
            with path.open("rb") as f:
                raw = f.read(STATE_MAX_BYTES + 1)
        except FileNotFoundError:
            return frozenset()
        except OSError as e:
            log.warning("switches: cannot read %s (%s); every switch starts ON", path, e.strerror or e)
            return frozenset()
        try:
            if len(raw) > STATE_MAX_BYTES:
                raise ValueError(f"larger than {STATE_MAX_BYTES} bytes")
            cams = json.loads(raw)["cameras"]
            off = {(cam, s) for cam, states in cams.items() for s, on in states.items()
                   if cam in self.cameras and s in SWITCHES and _checked_bool(on) is False}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("switches: %s is not a switch state file (%s); expected {\"cameras\": {NAME: "
                        "{SWITCH: true|false}}}; every switch starts ON", path, e)
            return frozenset()
        for cam, s in sorted(off):
            log.info("switches: %s of camera %s is OFF (kept in %s)", s, cam, path)
        return frozenset(off)


def _checked_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"a switch is {value!r}")
    return value
