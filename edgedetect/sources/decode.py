"""Decoding one still picture (a file's bytes, or one part of an MJPEG stream) within bounds.

The size is read from the header before anything is decoded, so that memory stays bounded
whatever the picture claims to be:

- a baseline JPEG is decoded reduced by libjpeg's DCT scaling (OpenCV's IMREAD_REDUCED_*), so
  a 12000x9000 photo (324 MB as BGR) is never whole in memory: at 1/4 it is 3000x2250, 20 MB;
- other formats (and progressive JPEG, which libjpeg buffers whole whatever the scale) are
  decoded at full size, so they are refused above MAX_DECODE_PIXELS;
- the result is then shrunk to at most `max_side` pixels on its longest side.

A JPEG without its end-of-image marker (a file or part cut short) is refused rather than shown
half grey, and nothing here makes OpenCV log: a refusal is a `BadImage` with a short reason.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

# Longest side of a still picture as the pipeline keeps it: a full-HD viewer shows it 1:1, and
# every model's input (300-640 pixels) is far smaller. 1920x1440 BGR is 8 MB.
MAX_SIDE = 1920
# Full-size decodes (formats libjpeg's scaling does not cover): 40 Mpx is 120 MB as BGR.
MAX_DECODE_PIXELS = 40_000_000

_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
SUPPORTED = "JPEG, PNG, BMP, WebP or TIFF"


class BadImage(Exception):
    """A picture that is not decoded; the message says why in a few words."""


def probe(data: bytes | memoryview) -> tuple[str, int, int, bool] | None:
    """(format, width, height, reducible) from the header alone; None if not a supported image.
    `reducible`: decodable at 1/2, 1/4 or 1/8 without the full image in memory."""
    b = bytes(data[:32])
    try:
        if b.startswith(b"\xff\xd8"):
            return _probe_jpeg(data)
        if b.startswith(b"\x89PNG\r\n\x1a\n") and b[12:16] == b"IHDR":
            w, h = struct.unpack(">II", b[16:24])
            return "PNG", w, h, False
        if b.startswith(b"BM") and len(b) >= 26:
            if struct.unpack("<I", b[14:18])[0] == 12:  # OS/2 header
                w, h = struct.unpack("<HH", b[18:22])
            else:
                w, h = struct.unpack("<ii", b[18:26])
            return "BMP", abs(w), abs(h), False
        if b.startswith(b"RIFF") and b[8:12] == b"WEBP":
            return _probe_webp(b)
        if b[:4] in (b"II*\x00", b"MM\x00*"):
            return _probe_tiff(data)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def jpeg_segments(data: bytes | bytearray | memoryview, start: int = 2):
    """(marker, offset) of each marker segment from SOI up to the first scan (SOS) included; from
    `start` instead, the offset of a segment an earlier walk over the same bytes reached."""
    i, n = start, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        yield marker, i
        if marker in (0xD9, 0xDA):  # end of image; start of scan (entropy-coded data follows)
            return
        i += 2 + struct.unpack(">H", bytes(data[i + 2:i + 4]))[0]


def _probe_jpeg(data: bytes | memoryview) -> tuple[str, int, int, bool] | None:
    for marker, i in jpeg_segments(data):
        if marker in _SOF:
            h, w = struct.unpack(">HH", bytes(data[i + 5:i + 9]))
            return "JPEG", w, h, marker not in _PROGRESSIVE
    return None


def _probe_webp(b: bytes) -> tuple[str, int, int, bool] | None:
    chunk = b[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", b[26:30])
        return "WebP", w & 0x3FFF, h & 0x3FFF, False
    if chunk == b"VP8L":
        (bits,) = struct.unpack("<I", b[21:25])
        return "WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, False
    if chunk == b"VP8X":
        w = int.from_bytes(b[24:27], "little") + 1
        h = int.from_bytes(b[27:30], "little") + 1
        return "WebP", w, h, False
    return None


def _probe_tiff(data: bytes | memoryview) -> tuple[str, int, int, bool] | None:
    end = "<" if bytes(data[:2]) == b"II" else ">"
    (ifd,) = struct.unpack(end + "I", bytes(data[4:8]))
    (count,) = struct.unpack(end + "H", bytes(data[ifd:ifd + 2]))
    size: dict[int, int] = {}
    for k in range(min(count, 512)):
        e = bytes(data[ifd + 2 + 12 * k: ifd + 14 + 12 * k])
        tag, typ = struct.unpack(end + "HH", e[:4])
        if tag in (256, 257):
            size[tag] = struct.unpack(end + ("H" if typ == 3 else "I"), e[8:10] if typ == 3 else e[8:12])[0]
    if 256 in size and 257 in size:
        return "TIFF", size[256], size[257], False
    return None


def jpeg_complete(data: bytes | memoryview) -> bool:
    """Whether a JPEG has its end-of-image marker after its first scan. Markers are walked by
    their lengths up to that scan (so an EXIF thumbnail's own end marker does not count), and
    no marker can occur inside entropy-coded data, so a file or stream part cut short fails
    this."""
    sos = next((i for marker, i in jpeg_segments(data) if marker == 0xDA), -1)
    if sos < 0:
        return False
    end = len(data)
    while end > sos and data[end - 1] in b"\r\n\x00 ":
        end -= 1
    return end - sos > 4 and bytes(data[end - 2:end]) == b"\xff\xd9"


def reduction(width: int, height: int, max_side: int) -> int:
    """The largest libjpeg scale denominator (1, 2, 4, 8) that still leaves the longest side at
    least `max_side`, so the final shrink only ever goes down."""
    factor = 1
    while factor < 8 and max(width, height) // (factor * 2) >= max_side:
        factor *= 2
    return factor


def fit(img: np.ndarray, max_side: int) -> np.ndarray:
    """`img` shrunk (area-averaged) so that its longest side is at most `max_side`."""
    h, w = img.shape[:2]
    if max(w, h) <= max_side:
        return img
    s = max_side / max(w, h)
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def decode(data: bytes | memoryview, max_side: int = MAX_SIDE,
           max_pixels: int = MAX_DECODE_PIXELS) -> np.ndarray:
    """BGR uint8 image of at most `max_side` on its longest side, or BadImage."""
    if not len(data):
        raise BadImage("empty")
    info = probe(data)
    if info is None:
        raise BadImage(f"not a {SUPPORTED} image")
    fmt, w, h, reducible = info
    if w <= 0 or h <= 0:
        raise BadImage(f"{fmt} header gives a size of {w}x{h}")
    if fmt == "JPEG" and not jpeg_complete(data):
        raise BadImage("JPEG cut short (no end-of-image marker)")
    # Any JPEG decodes at a reduced scale; a progressive one still buffers all its coefficients.
    factor = reduction(w, h, max_side) if fmt == "JPEG" else 1
    cost = (w // factor) * (h // factor) if reducible else w * h
    if cost > max_pixels:
        why = "" if reducible else f", and {'progressive JPEG' if fmt == 'JPEG' else fmt} is decoded whole"
        raise BadImage(f"{w}x{h} {fmt} is too large to decode (over {max_pixels / 1e6:.0f} Mpx{why})")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[factor])
    if img is None:
        raise BadImage(f"{fmt} data is corrupt")
    return fit(img, max_side)
