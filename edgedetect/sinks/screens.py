"""The monitor without a desktop: annotated frames letterboxed onto a canvas the size of the
screen (one tile per camera), written into the screen's memory in its pixel format.

Two outputs. DRM/KMS dumb buffers through the kms++ Python bindings (`pykms`, which picamera2's
DRM preview uses and Raspberry Pi OS ships as python3-kms++): two buffers, each frame drawn into
the one not shown and then flipped to at the next vertical blank, so no frame tears. Else the
Linux framebuffer (`/dev/fb0`): one buffer, its geometry read from sysfs, written in place.
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgedetect.detect.preprocess import letterbox_geometry
from edgedetect.errors import DisplayError
from edgedetect.frames import Result
from edgedetect.pipeline.annotate import draw_result
from edgedetect.system import drm

# DRM fourcc -> (bytes per pixel, OpenCV conversion from BGR; None: BGR as it is). Little-endian
# memory order: XRGB8888 is B, G, R, X; RGB888 is B, G, R; RGB565 is a 16-bit word, red on top.
FORMATS: dict[str, tuple[int, int | None]] = {
    "XR24": (4, cv2.COLOR_BGR2BGRA),
    "RG24": (3, None),
    "RG16": (2, cv2.COLOR_BGR2BGR565),
}
FB_FORMATS = {32: "XR24", 24: "RG24", 16: "RG16"}  # framebuffer bits_per_pixel -> fourcc
KMS_FORMAT = "XR24"
KMS_INSTALL = "sudo apt install python3-kms++ (Raspberry Pi OS), in a venv made with --system-site-packages"


@dataclass(frozen=True, slots=True)
class Layout:
    """How a screen's pixels lie in its memory."""

    width: int
    height: int
    stride: int  # bytes from one row to the next; rows may be padded past width * bytes per pixel
    fourcc: str

    def __post_init__(self) -> None:
        if self.fourcc not in FORMATS:
            raise DisplayError(f"display: pixel format {self.fourcc} (expected one of {', '.join(FORMATS)})")
        if self.width <= 0 or self.height <= 0 or self.stride < self.width * self.bytes_per_pixel:
            raise DisplayError(f"display: {self.width}x{self.height} at {self.bytes_per_pixel} bytes a pixel "
                               f"does not fit a stride of {self.stride} bytes")

    @property
    def bytes_per_pixel(self) -> int:
        return FORMATS[self.fourcc][0]

    @property
    def nbytes(self) -> int:
        return self.stride * self.height

    def pixels(self, buf: Any) -> np.ndarray:
        """The visible pixels of `buf` (the screen's memory) as a writable [height, width, bytes] view."""
        rows = np.frombuffer(buf, np.uint8, count=self.nbytes).reshape(self.height, self.stride)
        return rows[:, :self.width * self.bytes_per_pixel].reshape(self.height, self.width, self.bytes_per_pixel)

    def write(self, canvas: np.ndarray, buf: Any) -> None:
        """Convert a BGR canvas of the screen's size straight into `buf`."""
        dst = self.pixels(buf)
        code = FORMATS[self.fourcc][1]
        if code is None:
            dst[...] = canvas
        else:
            cv2.cvtColor(canvas, code, dst=dst)


def grid(n: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) of n tiles filling the screen, row by row, in as square a grid as fits."""
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tw, th = width // cols, height // rows
    return [((i % cols) * tw, (i // cols) * th, tw, th) for i in range(n)]


class Canvas:
    """The screen's picture in BGR: each camera's newest annotated frame letterboxed into its tile."""

    def __init__(self, width: int, height: int, cameras: list[str]):
        self.image = np.zeros((height, width, 3), np.uint8)
        self.tiles = dict(zip(cameras, grid(len(cameras), width, height)))
        self._fits: dict[str, tuple[int, int, int, int]] = {}

    def draw(self, result: Result, banner: str = "") -> None:
        x, y, w, h = self.tiles[result.camera]
        fh, fw = result.frame.image.shape[:2]
        dw, dh, left, top = letterbox_geometry(fw, fh, w, h)
        fit = (x + left, y + top, dw, dh)
        if self._fits.get(result.camera) != fit:  # a new size: the bars around the picture go black
            self.image[y:y + h, x:x + w] = 0
            self._fits[result.camera] = fit
        region = self.image[fit[1]:fit[1] + dh, fit[0]:fit[0] + dw]
        cv2.resize(result.frame.image, (dw, dh), dst=region, interpolation=cv2.INTER_LINEAR)
        draw_result(region, result, banner)


class FramebufferScreen:
    """A framebuffer device (or any file of its size), memory-mapped and written in place."""

    def __init__(self, path: Path, layout: Layout, hz: float):
        self.path = path
        self.layout = layout
        self.hz = hz
        self._fd = -1
        self._map: mmap.mmap | None = None

    @classmethod
    def open(cls, device: str, sysfs_root: str) -> FramebufferScreen:
        path = Path(device)
        geo = drm.fb_geometry(sysfs_root, path.name)
        fourcc = FB_FORMATS.get(geo.bits_per_pixel)
        if fourcc is None:
            raise DisplayError(f"display: {device}: {geo.bits_per_pixel} bits a pixel (expected 16, 24 or 32)")
        screen = cls(path, Layout(geo.width, geo.height, geo.stride, fourcc), geo.hz)
        screen._map_device()
        return screen

    def _map_device(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise DisplayError(f"display: {self.path}: no such framebuffer device (on a Pi, keep "
                               "dtoverlay=vc4-kms-v3d in /boot/firmware/config.txt; or set [display] device)") from None
        except OSError as e:
            raise DisplayError(f"display: {self.path}: cannot open ({e.strerror}); the user needs the video "
                               "group") from None
        try:
            size = os.fstat(fd).st_size
            if size and size < self.layout.nbytes:  # a device reports 0; a file must hold the screen
                raise DisplayError(f"display: {self.path}: {size} bytes, expected {self.layout.nbytes} "
                                   f"({self.layout.height} rows of {self.layout.stride})")
            self._map = mmap.mmap(fd, self.layout.nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, ValueError) as e:
            os.close(fd)
            raise DisplayError(f"display: {self.path}: cannot map {self.layout.nbytes} bytes ({e})") from None
        except DisplayError:
            os.close(fd)
            raise
        self._fd = fd

    def show(self, canvas: np.ndarray) -> None:
        assert self._map is not None
        self.layout.write(canvas, self._map)

    def describe(self) -> str:
        lay = self.layout
        return f"framebuffer {self.path} {lay.width}x{lay.height} {lay.fourcc}"

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _pykms() -> Any:
    import pykms  # noqa: PLC0415 - only on a Pi with python3-kms++

    return pykms


def kms_available() -> bool:
    try:
        _pykms()
    except ImportError:
        return False
    return True


class KmsScreen:
    """DRM/KMS through kms++: a connector, its CRTC, its primary plane, and two dumb buffers
    flipped in turn. The calls are those picamera2's DRM preview makes on Raspberry Pi OS's kms++."""

    def __init__(self, card: Path, pykms: Any):
        self.card_path = card
        self._kms = pykms
        self.card = pykms.Card(str(card))
        if not self.card.has_atomic:
            raise DisplayError(f"display: {card}: no atomic modesetting (expected the vc4-kms-v3d driver)")
        res = pykms.ResourceManager(self.card)
        self.conn = res.reserve_connector()
        self.crtc = res.reserve_crtc(self.conn) if self.conn is not None else None
        self.plane = res.reserve_primary_plane(self.crtc, pykms.PixelFormat.XRGB8888) if self.crtc else None
        if self.plane is None:
            raise DisplayError(f"display: {card}: no free connector, CRTC and plane to show frames on")
        # The console already drives the screen in its mode: keep it, so that taking the screen
        # needs no modeset (no flicker, no re-sync of the monitor).
        keep = bool(self.crtc.mode_valid)
        mode = self.crtc.mode if keep else self.conn.get_default_mode()
        w, h = mode.hdisplay, mode.vdisplay
        self.hz = float(mode.vrefresh or drm.DEFAULT_HZ)
        self.fbs = [pykms.DumbFramebuffer(self.card, w, h, KMS_FORMAT) for _ in range(2)]
        self.layout = Layout(w, h, self.fbs[0].stride(0), KMS_FORMAT)
        self.maps = [mmap.mmap(fb.fd(0), self.layout.nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                     for fb in self.fbs]
        self._back = 0
        req = pykms.AtomicReq(self.card)
        blob = None
        if not keep:
            blob = mode.to_blob(self.card)  # held until the commit has read it
            req.add(self.conn, "CRTC_ID", self.crtc.id)
            req.add(self.crtc, {"ACTIVE": 1, "MODE_ID": blob.id})
        self._add_plane(req, self.fbs[1])
        self._commit(req, allow_modeset=not keep)
        del blob

    def _add_plane(self, req: Any, fb: Any) -> None:
        req.add(self.plane, plane_properties(fb.id, self.crtc.id, self.layout.width, self.layout.height))

    def _commit(self, req: Any, allow_modeset: bool = False) -> None:
        try:
            r = req.commit_sync(allow_modeset=allow_modeset)
        except (RuntimeError, OSError) as e:
            r = str(e)
        if r is None or (isinstance(r, int) and r >= 0):
            return
        why = os.strerror(-r) if isinstance(r, int) else r
        raise DisplayError(f"display: {self.card_path}: the screen refused the frame ({why}); another program "
                           "may have taken it")

    def show(self, canvas: np.ndarray) -> None:
        """Draw into the buffer not on screen, then flip to it at the next vertical blank."""
        i = self._back
        self.layout.write(canvas, self.maps[i])
        req = self._kms.AtomicReq(self.card)
        self._add_plane(req, self.fbs[i])
        self._commit(req)
        self._back = 1 - i

    def describe(self) -> str:
        lay = self.layout
        return f"DRM/KMS {self.card_path} {self.conn.fullname} {lay.width}x{lay.height} {self.hz:g} Hz"

    def close(self) -> None:
        for m in self.maps:
            m.close()
        self.maps = []
        self.fbs = []
        self.card = None  # closing the card gives the screen back to the console


def plane_properties(fb_id: int, crtc_id: int, width: int, height: int) -> dict[str, int]:
    """A full-screen plane showing the whole buffer; source sizes are 16.16 fixed point."""
    return {"FB_ID": fb_id, "CRTC_ID": crtc_id, "SRC_X": 0, "SRC_Y": 0, "SRC_W": width << 16,
            "SRC_H": height << 16, "CRTC_X": 0, "CRTC_Y": 0, "CRTC_W": width, "CRTC_H": height}


Screen = FramebufferScreen | KmsScreen


def choose_card(sysfs_root: str, dev_root: str = "/dev") -> Path:
    """The card with a connected screen (a Pi 4 has two: v3d renders, vc4 drives the HDMI ports)."""
    shown = drm.connected(sysfs_root)
    if not shown:
        cards = sorted(p.name for p in (Path(dev_root) / "dri").glob("card*"))
        if not cards:
            raise DisplayError(f"display: no DRM device ({dev_root}/dri/card*): on a Pi, keep dtoverlay=vc4-kms-v3d "
                               "in /boot/firmware/config.txt and reboot")
        raise DisplayError(f"display: no monitor connected to {', '.join(cards)}: plug in the HDMI cable "
                           "(HDMI 0, next to the power socket, on a Pi 4) and restart the service")
    return drm.card_path(shown[0].card, dev_root)


def check_not_owned(card: Path, procfs_root: str) -> None:
    """One line when another process (a desktop) is DRM master of the card: it owns the screen."""
    if not card.exists():
        return
    holder = drm.master_holder(card, procfs_root)
    if holder is not None:
        raise DisplayError(f"display: another process owns the screen ({holder} is DRM master of {card}); a "
                           "desktop is running: boot to the console (sudo raspi-config, System Options, Boot, "
                           "Console) or watch the viewer page in a kiosk instead (docs/service.md) and set "
                           "[display] mode = \"none\"")


def screen_device(device: str, sysfs_root: str, dev_root: str = "/dev") -> tuple[str, Path]:
    """("kms", card) or ("fb", framebuffer) for [display] device: a DRM card through kms++, any
    other path as a framebuffer; empty: DRM/KMS when kms++ is importable, else fb0."""
    if device:
        return ("kms" if Path(device).parent.name == "dri" else "fb"), Path(device)
    if kms_available():
        return "kms", choose_card(sysfs_root, dev_root)
    return "fb", Path(dev_root) / "fb0"


def open_screen(device: str, sysfs_root: str, procfs_root: str = "/proc", dev_root: str = "/dev") -> Screen:
    kind, path = screen_device(device, sysfs_root, dev_root)
    if kind == "fb":
        shown = drm.connected(sysfs_root)
        if shown:  # with a desktop on the card, what is written to the framebuffer is never shown
            check_not_owned(drm.card_path(shown[0].card, dev_root), procfs_root)
        return FramebufferScreen.open(str(path), sysfs_root)
    try:
        pykms = _pykms()
    except ImportError:
        raise DisplayError(f"display: device {path}: DRM/KMS needs the kms++ Python bindings: {KMS_INSTALL}; "
                           "or set [display] device = \"/dev/fb0\"") from None
    if not path.exists():
        raise DisplayError(f"display: {path}: no such DRM device (expected one of "
                           f"{', '.join(sorted(str(c) for c in path.parent.glob('card*'))) or 'none'})")
    check_not_owned(path, procfs_root)
    try:
        return KmsScreen(path, pykms)
    except DisplayError:
        raise
    except (RuntimeError, OSError, ValueError) as e:  # kms++ raises plain RuntimeError variants
        raise DisplayError(f"display: {path}: cannot drive the screen through DRM/KMS ({e})") from None
