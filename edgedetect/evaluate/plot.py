"""`edgedetect eval --plot`: precision against recall at IoU 0.5, one curve a model (the mean of
its classes' curves, whose area is its mAP50), drawn with OpenCV into a PNG: matplotlib is not
on a Pi by default and this needs nothing more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgedetect.errors import UserError

WIDTH, HEIGHT = 900, 640
LEFT, RIGHT, TOP, BOTTOM = 80, 300, 50, 70  # margins: the legend sits on the right
COLOURS = ((180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
           (194, 119, 227), (127, 127, 127))  # BGR
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _xy(recall: float, precision: float) -> tuple[int, int]:
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    return LEFT + round(recall * w), TOP + round((1.0 - precision) * h)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.5, colour=(40, 40, 40)) -> None:
    cv2.putText(img, text, org, FONT, scale, colour, 1, cv2.LINE_AA)


def draw(report: dict[str, Any]) -> np.ndarray:
    img = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    for i in range(6):
        v = i / 5
        cv2.line(img, _xy(v, 0), _xy(v, 1), (225, 225, 225), 1)
        cv2.line(img, _xy(0, v), _xy(1, v), (225, 225, 225), 1)
        x, y = _xy(v, 0)
        _text(img, f"{v:.1f}", (x - 12, y + 20))
        x, y = _xy(0, v)
        _text(img, f"{v:.1f}", (x - 38, y + 5))
    cv2.rectangle(img, _xy(0, 1), _xy(1, 0), (80, 80, 80), 1)
    _text(img, "recall", (_xy(0.5, 0)[0] - 25, HEIGHT - 20), 0.6)
    _text(img, "precision", (8, TOP - 15), 0.6)
    _text(img, f"precision-recall at IoU 0.5, {report['scored_images']} pictures", (LEFT + 90, TOP - 15), 0.6)
    for i, m in enumerate(report["models"]):
        colour = COLOURS[i % len(COLOURS)]
        curve = m.get("curve") or []
        if curve:
            recall = np.linspace(0.0, 1.0, len(curve))
            pts = np.array([_xy(r, max(p, 0.0)) for r, p in zip(recall, curve)], np.int32)
            cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
        y = TOP + 20 + 44 * i
        x = WIDTH - RIGHT + 20
        cv2.line(img, (x, y - 5), (x + 24, y - 5), colour, 3)
        _text(img, m["model"][:34], (x + 32, y), 0.45)
        ap50 = "-" if m["map50"] is None else f"{m['map50']:.3f}"
        _text(img, f"mAP50 {ap50}" + ("" if curve else " (nothing to draw)"), (x + 32, y + 18), 0.45, (90, 90, 90))
    return img


def plot(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", draw(report))
    if not ok:
        raise UserError(f"--plot {path}: cannot encode the picture")
    path.write_bytes(png.tobytes())
