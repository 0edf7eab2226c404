"""Drawing results onto frames: boxes with their labels and scores, and a figures banner."""

from __future__ import annotations

import cv2
import numpy as np

from edgedetect.frames import Result

FONT = cv2.FONT_HERSHEY_SIMPLEX


def colour_for(class_id: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per class (golden-ratio hue steps)."""
    hue = int((class_id * 0.618034 % 1.0) * 180)
    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


# Computed once: a colour per class id without a colour conversion per box per frame.
_PALETTE: tuple[tuple[int, int, int], ...] = tuple(colour_for(i) for i in range(256))


def palette(class_id: int) -> tuple[int, int, int]:
    return _PALETTE[class_id] if 0 <= class_id < len(_PALETTE) else colour_for(class_id)


def _label(img: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], scale: float) -> None:
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    y = max(y, th + base + 2)
    cv2.rectangle(img, (x, y - th - base - 2), (x + tw + 4, y), colour, cv2.FILLED)
    cv2.putText(img, text, (x + 2, y - base - 1), FONT, scale, (0, 0, 0), thick, cv2.LINE_AA)


def annotated(result: Result, banner: str = "") -> np.ndarray:
    """A copy of the result's frame with its findings drawn: frames are read-only, and an events
    sink cropping the same frame on its own thread must never see boxes on it."""
    return draw_result(result.frame.image.copy(), result, banner)


def draw_result(img: np.ndarray, result: Result, banner: str = "") -> np.ndarray:
    """Draw in place on `img` (BGR, the frame's display size, never the frame's own) and return it."""
    h, w = img.shape[:2]
    scale = max(0.4, min(w, h) / 900)
    thick = max(1, round(min(w, h) / 300))
    for d in result.detections:
        x0, y0, x1, y1 = d.pixel_box(w, h)
        c = palette(d.class_id)
        cv2.rectangle(img, (x0, y0), (x1, y1), c, thick)
        _label(img, f"{d.label} {d.score:.0%}", x0, y0, c, scale)
    y = 0
    lines = [banner] if banner else []
    lines += [f"{c.label} {c.score:.0%}" for c in result.classes]
    for text in lines:
        (_, th), base = cv2.getTextSize(text, FONT, scale, 1)
        y += th + base + 6
        _label(img, text, 4, y, (255, 255, 255), scale)
    return img


def no_signal(width: int = 640, height: int = 360, text: str = "no signal") -> np.ndarray:
    img = np.full((height, width, 3), 40, np.uint8)
    scale = width / 500
    (tw, th), _ = cv2.getTextSize(text, FONT, scale, 2)
    cv2.putText(img, text, ((width - tw) // 2, (height + th) // 2), FONT, scale, (200, 200, 200), 2, cv2.LINE_AA)
    return img
