"""What tracking emits: one ObjectEvent per start, update or end, and what its consumers share
about it (its id, the region its pictures are cut from)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgedetect import clock
from edgedetect.frames import Detection
from edgedetect.tracking.tracker import Box, TrackEvent

SNAPSHOT_MIN_PX = 160


@dataclass(frozen=True, slots=True)
class Sighting:
    """The best-scoring sighting of a tracked object: its frame (a reference to the immutable
    frame's pixels, no copy) and the detections of that frame."""

    score: float
    box: Box
    image: np.ndarray
    detections: tuple[Detection, ...]


@dataclass(frozen=True, slots=True)
class ObjectEvent:
    """One start, update or end of a tracked object, as the store and MQTT take it."""

    track: TrackEvent
    id: str  # event_id, fixed at its start
    zones: tuple[str, ...]  # the zones its object has entered so far, sorted
    best: Sighting | None  # only for the labels a consumer asked best sightings for
    image: np.ndarray | None  # the frame that caused it; None for events ended without one (stop, source end)
    camera: str = ""  # the camera its object was seen by

    @property
    def label(self) -> str:
        return self.track.label


def event_id(start_t: float, seq: int) -> str:
    """An event's id: its start as wall-clock seconds (3 decimals) and its number, fixed once
    at its start so that every message, the store and the API name it alike."""
    now_m, now_w = clock.now(), clock.wall()
    return f"{now_w - (now_m - start_t):.3f}-{seq}"


def crop_region(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel region around a normalised box: half its size again on every side, at least
    SNAPSHOT_MIN_PX square where the frame allows, inside the frame."""
    x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    cw = min(width, max(2 * (x1 - x0), SNAPSHOT_MIN_PX))
    ch = min(height, max(2 * (y1 - y0), SNAPSHOT_MIN_PX))
    left = min(max(0.0, cx - cw / 2), width - cw)
    top = min(max(0.0, cy - ch / 2), height - ch)
    return round(left), round(top), round(left + cw), round(top + ch)
