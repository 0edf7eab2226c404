"""The data that flows through the pipeline: frames, detections, inference results."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Frame:
    """One captured image. `image` is BGR uint8 (OpenCV order) at display size;
    `lores` is an optional smaller RGB image a camera already made for inference."""

    index: int
    t_capture: float  # clock.now() when the frame left the source
    image: np.ndarray
    lores: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Detection:
    """One object. `box` is (xmin, ymin, xmax, ymax) normalised to [0, 1] of the frame."""

    class_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]

    def pixel_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = self.box
        return (
            round(x0 * width),
            round(y0 * height),
            round(x1 * width),
            round(y1 * height),
        )


@dataclass(frozen=True, slots=True)
class Classification:
    class_id: int
    label: str
    score: float


@dataclass(slots=True)
class Result:
    """What the detector made of one frame."""

    frame: Frame
    detections: list[Detection] = field(default_factory=list)
    classes: list[Classification] = field(default_factory=list)
    inference_ms: float = 0.0
    t_done: float = 0.0  # clock.now() when inference finished
    held: bool = False  # not inferred (still scene): an earlier inference's findings on a new frame
