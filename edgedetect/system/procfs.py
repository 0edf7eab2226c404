"""Memory figures from procfs: the CMA pool the Pi camera's buffers come from. The root is
configurable ([stats] procfs_root) so tests use a fake tree; what is absent is left out.

CMA (the kernel's contiguous memory allocator) is a region reserved at boot that the camera
(libcamera's dma-heap buffers) and the GPU allocate from. When it runs short the camera fails
to configure or restart with "Cannot allocate memory" (picamera2 #972, #1125), however much
ordinary memory is free; re-created Picamera2 objects that are never closed also hold theirs
(#958, #887).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("edgedetect.system.health")

MEMINFO_FILE = "meminfo"

# Below this much free CMA a camera restart, which allocates its buffers again, is likely to fail:
# three 1280x720 buffers (main and lores) take about 9 MB, and libcamera's own raw and ISP
# buffers, sized by the sensor mode, take as much again or more.
CMA_LOW_MB = 32.0
CMA_OK_MB = 48.0  # free again only above this, so a pool hovering at the limit is not logged per reading


@dataclass(frozen=True, slots=True)
class Cma:
    total_kb: int
    free_kb: int

    @property
    def total_mb(self) -> float:
        return self.total_kb / 1024

    @property
    def free_mb(self) -> float:
        return self.free_kb / 1024

    @property
    def low(self) -> bool:
        return self.free_mb < CMA_LOW_MB


def parse_meminfo(text: str) -> dict[str, int]:
    """`Key:   value kB` lines as {key: kB}; lines that do not parse are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0])
    return out


class ProcfsReader:
    def __init__(self, root: str | Path = "/proc"):
        self.root = Path(root)

    def meminfo(self) -> dict[str, int]:
        try:
            return parse_meminfo((self.root / MEMINFO_FILE).read_text())
        except (OSError, UnicodeDecodeError):
            return {}

    def cma(self) -> Cma | None:
        """CmaTotal and CmaFree; None when the kernel has no CMA (or reports 0 kB of it)."""
        info = self.meminfo()
        total, free = info.get("CmaTotal"), info.get("CmaFree")
        if not total or free is None:
            return None
        return Cma(total, free)


class CmaLog:
    """One WARNING when free CMA drops below CMA_LOW_MB while the camera runs, one INFO when it
    is back above CMA_OK_MB; nothing in between, however often it is read."""

    def __init__(self, logger: logging.Logger = log):
        self._log = logger
        self._lock = threading.Lock()
        self._low = False

    def update(self, cma: Cma | None, camera_running: bool) -> None:
        if cma is None or not camera_running:
            return
        with self._lock:
            was = self._low
            self._low = cma.free_mb < (CMA_OK_MB if was else CMA_LOW_MB)
            now = self._low
        if now and not was:
            self._log.warning("CMA low: %.0f MB free of %.0f MB while the camera runs; restarting the camera "
                              "may fail with 'Cannot allocate memory' (close other camera or GPU programs, "
                              "or reserve more: dtoverlay=vc4-kms-v3d,cma-512 in /boot/firmware/config.txt)",
                              cma.free_mb, cma.total_mb)
        elif was and not now:
            self._log.info("CMA free again: %.0f MB of %.0f MB", cma.free_mb, cma.total_mb)
