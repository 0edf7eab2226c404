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


Rect = tuple[int, int, int, int]  # x0, y0, x1, y1
MAX_STEPS = 8  # places below a box's top a label may move down to, one label height each


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(sizes: list[tuple[int, int]], anchors: list[tuple[int, int]], width: int, height: int,
                 taken: list[Rect] | None = None) -> list[Rect]:
    """Where each label (width, height) goes: above its anchor (a box's top-left corner), else
    just inside the box, else lower down; always inside the frame and clear of the labels placed
    before it and of `taken`. People standing in a group give boxes whose corners nearly meet,
    and their labels would otherwise cover each other. A label with no free place keeps its first."""
    placed = list(taken or [])
    out = []
    for (lw, lh), (ax, ay) in zip(sizes, anchors):
        x = min(max(0, ax), max(0, width - lw))
        tries = [ay - lh, ay] + list(range(ay + lh, min(height - lh, ay + MAX_STEPS * lh) + 1, max(1, lh)))
        rects = [(x, y, x + lw, y + lh) for y in (min(max(0, t), max(0, height - lh)) for t in tries)]
        rect = next((r for r in rects if not any(_overlaps(r, q) for q in placed)), rects[0])
        placed.append(rect)
        out.append(rect)
    return out


def label_size(text: str, scale: float, thick: int) -> tuple[int, int, int]:
    """(width, height, baseline) of a label's filled background with its text."""
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    return tw + 4, th + base + 2, base


def draw_label(img: np.ndarray, text: str, rect: Rect, colour: tuple[int, ...], scale: float, thick: int,
           ink: tuple[int, ...] = (0, 0, 0)) -> None:
    x0, y0, x1, y1 = rect
    base = label_size(text, scale, thick)[2]
    cv2.rectangle(img, (x0, y0), (x1, y1), colour, cv2.FILLED)
    cv2.putText(img, text, (x0 + 2, y1 - base - 1), FONT, scale, ink, thick, cv2.LINE_AA)


def annotated(result: Result, banner: str = "") -> np.ndarray:
    """A copy of the result's frame with its findings drawn: frames are read-only, and an events
    sink cropping the same frame on its own thread must never see boxes on it."""
    return draw_result(result.frame.image.copy(), result, banner)


def draw_result(img: np.ndarray, result: Result, banner: str = "") -> np.ndarray:
    """Draw in place on `img` (BGR, the frame's display size, never the frame's own) and return it."""
    h, w = img.shape[:2]
    scale = max(0.4, min(w, h) / 900)
    thick = max(1, round(min(w, h) / 300))
    text_thick = max(1, round(scale * 2))
    lines = [banner] if banner else []
    lines += [f"{c.label} {c.score:.0%}" for c in result.classes]
    taken: list[Rect] = []
    y = 0
    for text in lines:  # top left, one under the other
        lw, lh, _ = label_size(text, scale, text_thick)
        rect = (4, y + 4, 4 + lw, y + 4 + lh)
        draw_label(img, text, rect, (255, 255, 255), scale, text_thick)
        taken.append(rect)
        y = rect[3]
    boxes = [d.pixel_box(w, h) for d in result.detections]
    texts = [f"{d.label} {d.score:.0%}" for d in result.detections]
    for d, (x0, y0, x1, y1) in zip(result.detections, boxes):
        cv2.rectangle(img, (x0, y0), (x1, y1), palette(d.class_id), thick)
    sizes = [label_size(t, scale, text_thick)[:2] for t in texts]
    rects = place_labels(sizes, [(b[0], b[1]) for b in boxes], w, h, taken)
    for d, text, rect in zip(result.detections, texts, rects):
        draw_label(img, text, rect, palette(d.class_id), scale, text_thick)
    return img


def no_signal(width: int = 640, height: int = 360, text: str = "no signal") -> np.ndarray:
    img = np.full((height, width, 3), 40, np.uint8)
    scale = width / 500
    (tw, th), _ = cv2.getTextSize(text, FONT, scale, 2)
    cv2.putText(img, text, ((width - tw) // 2, (height + th) // 2), FONT, scale, (200, 200, 200), 2, cv2.LINE_AA)
    return img
