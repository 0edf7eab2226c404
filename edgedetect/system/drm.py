"""The screen as the kernel shows it: DRM connectors (connected or not, their modes) and the
framebuffer's geometry from sysfs, and whether another process is DRM master of a card (a
desktop owns the screen). Read by the monitor (sinks/display) and by `doctor`. The sysfs and
/dev roots are parameters, so tests point them at fake trees."""

from __future__ import annotations

import errno
import fcntl
import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgedetect.errors import DisplayError

DRM_CLASS = "class/drm"
FB_CLASS = "class/graphics"
DEFAULT_HZ = 60.0  # when neither the kernel nor kms++ names the refresh rate
# _IO('d', 0x1e) and _IO('d', 0x1f) of linux/drm.h
DRM_IOCTL_SET_MASTER = 0x641E
DRM_IOCTL_DROP_MASTER = 0x641F


@dataclass(frozen=True, slots=True)
class Connector:
    name: str  # as sysfs names it: card1-HDMI-A-1
    connected: bool
    modes: tuple[str, ...]  # "1920x1080", the preferred one first

    @property
    def card(self) -> str:
        return self.name.split("-", 1)[0]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def connectors(sysfs_root: str | Path) -> list[Connector]:
    """Every display connector of every DRM card (card1-HDMI-A-1, ...)."""
    out = []
    for d in sorted((Path(sysfs_root) / DRM_CLASS).glob("card*-*")):
        status = _read(d / "status")
        if status is None:
            continue
        out.append(Connector(d.name, status == "connected", tuple((_read(d / "modes") or "").split())))
    return out


def connected(sysfs_root: str | Path) -> list[Connector]:
    return [c for c in connectors(sysfs_root) if c.connected]


@dataclass(frozen=True, slots=True)
class FbGeometry:
    width: int
    height: int
    bits_per_pixel: int
    stride: int  # bytes from one row to the next
    hz: float


def fb_geometry(sysfs_root: str | Path, name: str) -> FbGeometry:
    """The framebuffer `name` (fb0) as sysfs describes it: virtual_size, bits_per_pixel, stride,
    and the visible size and refresh rate from `modes` where it names them."""
    d = Path(sysfs_root) / FB_CLASS / name
    values = {key: _read(d / key) for key in ("virtual_size", "bits_per_pixel", "stride")}
    missing = [key for key, v in values.items() if v is None]
    if missing:
        raise DisplayError(f"display: {d}: no {', '.join(missing)} (expected the framebuffer's geometry there; "
                           "is the device a framebuffer, and [stats] sysfs_root right?)")
    try:
        width, height = (int(v) for v in values["virtual_size"].split(","))  # type: ignore[union-attr]
        bpp, stride = int(values["bits_per_pixel"]), int(values["stride"])  # type: ignore[arg-type]
    except ValueError:
        raise DisplayError(f"display: {d}: unreadable geometry {values!r} (expected virtual_size 'W,H', "
                           "bits_per_pixel and stride as numbers)") from None
    hz = DEFAULT_HZ
    # "U:1920x1080p-60": the visible part of a virtual size that may be taller (panning)
    m = re.match(r"\w:(\d+)x(\d+)\w?-(\d+)", (_read(d / "modes") or "").split("\n")[0])
    if m:
        width, height = min(width, int(m[1])), min(height, int(m[2]))
        hz = float(m[3]) or DEFAULT_HZ
    if width <= 0 or height <= 0 or stride <= 0:
        raise DisplayError(f"display: {d}: geometry {width}x{height}, stride {stride} (expected positive sizes)")
    return FbGeometry(width, height, bpp, stride, hz)


def card_path(name: str, dev_root: str | Path = "/dev") -> Path:
    return Path(dev_root) / "dri" / name


def master_holder(card: Path, procfs_root: str | Path = "/proc") -> str | None:
    """None when no other process is DRM master of `card` (this one could drive the screen);
    else who holds the card open ("labwc (pid 812)"), as far as this user may see."""
    try:
        fd = os.open(card, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise DisplayError(f"display: {card}: cannot open ({e.strerror}); the service's user needs the video "
                           "and render groups") from None
    try:
        # Opening a card nobody masters makes this file its master; SET_MASTER then succeeds.
        # With another master (a desktop) it fails: EBUSY for root, EACCES for others.
        fcntl.ioctl(fd, DRM_IOCTL_SET_MASTER)
    except OSError as e:
        if e.errno not in (errno.EBUSY, errno.EACCES, errno.EPERM):
            raise DisplayError(f"display: {card}: not a DRM card ({e.strerror})") from None
        return ", ".join(holders(card, procfs_root)) or "another process"
    else:
        try:
            fcntl.ioctl(fd, DRM_IOCTL_DROP_MASTER)
        except OSError:
            pass  # closing drops it too
        return None
    finally:
        os.close(fd)


def holders(card: Path, procfs_root: str | Path = "/proc") -> list[str]:
    """"name (pid N)" of each process with `card` open that this user may look into."""
    target = str(card)
    out = []
    for proc in sorted(Path(procfs_root).glob("[0-9]*"), key=lambda p: int(p.name)):
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    out.append(f"{_read(proc / 'comm') or '?'} (pid {proc.name})")
                    break
            except OSError:
                continue
    return [h for h in out if not h.endswith(f"(pid {os.getpid()})")]
