"""The data that flows through the pipeline: frames, detections, inference results.

All of it is immutable once made: a frame's pixel arrays are read-only from capture on, and a
result is frozen before it is published, so any number of sinks may read them on their own
threads without copies or locks (drawing works on a copy, see sinks/annotate.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def frozen_array(a: np.ndarray) -> np.ndarray:
    """`a` made read-only; a view of someone else's array is copied first, so that the owner
    cannot change pixels under the pipeline either."""
    if a.base is not None and a.base.flags.writeable:
        a = a.copy()
    a.flags.writeable = False
    return a


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One compressed video packet as the camera (or the Pi's hardware encoder) made it. Clips
    are made by copying these into a container; they are never decoded or encoded again."""

    data: bytes
    t: float  # clock.now() the packet stands for (its timestamp mapped onto the monotonic clock)
    key: bool  # a clip may start here
    codec: str  # "h264" or "hevc"
    width: int
    height: int
    extradata: bytes = b""  # codec parameters (SPS/PPS) carried out of band; empty: inline in `data`


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image. `image` is BGR uint8 (OpenCV order) at display size;
    `lores` is an optional smaller RGB image a camera already made for inference."""

    index: int
    t_capture: float  # clock.now() when the frame left the source
    image: np.ndarray
    lores: np.ndarray | None = None
    camera: str = ""  # the name of the camera it came from
    # For a file read unpaced: the capture time of its first frame plus this frame's position at
    # the file's frame rate. The tracker's motion model runs on it, so a file makes the same events
    # however fast the machine reads it. None: the scene's time is the capture time.
    t_media: float | None = None
    # The compressed packets of the recorded stream that arrived since the previous frame (a
    # camera's own H.264, the hardware encoder's output): a source that gives any gives them on
    # every frame it can, and its clips are copies of them. Empty: clips encode the pixels.
    packets: tuple[EncodedPacket, ...] = ()

    @property
    def t_scene(self) -> float:
        """The time in the scene this frame shows, for anything that models motion."""
        return self.t_capture if self.t_media is None else self.t_media

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", frozen_array(self.image))
        if self.lores is not None:
            object.__setattr__(self, "lores", frozen_array(self.lores))


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


@dataclass(frozen=True, slots=True)
class Result:
    """What the detector made of one frame."""

    frame: Frame
    detections: tuple[Detection, ...] = ()
    classes: tuple[Classification, ...] = ()
    inference_ms: float = 0.0
    t_done: float = 0.0  # clock.now() when inference finished
    held: bool = False  # not inferred (still scene): an earlier inference's findings on a new frame
    weak: tuple[Detection, ...] = ()  # under the threshold: only for the tracker (DetectFilter.weak_threshold)

    def __post_init__(self) -> None:
        object.__setattr__(self, "detections", tuple(self.detections))
        object.__setattr__(self, "classes", tuple(self.classes))

    @property
    def camera(self) -> str:
        return self.frame.camera
