"""The JSON the API serves for a result."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from edgedetect import clock
from edgedetect.frames import Result


def detections_json(result: Result | None) -> dict[str, Any]:
    """The newest frame's detections in source-frame pixels, as /api/detections serves them."""
    if result is None or result.frame.index < 0:
        return {"frame": None, "timestamp": None, "detections": []}
    h, w = result.frame.image.shape[:2]
    # Monotonic capture time shown as wall-clock time for other programs.
    ts = clock.wall() - (clock.now() - result.frame.t_capture)
    out: dict[str, Any] = {
        "frame": result.frame.index,
        "timestamp": round(ts, 3),
        "width": w,
        "height": h,
        "inference_ms": round(result.inference_ms, 2),
        "detections": [
            {"label": d.label, "class_id": d.class_id, "score": round(d.score, 4), "box": list(d.pixel_box(w, h))}
            for d in result.detections
        ],
    }
    if result.classes:
        out["classes"] = [{"label": c.label, "class_id": c.class_id, "score": round(c.score, 4)}
                          for c in result.classes]
    return out


def without_credentials(uri: str) -> str:
    """A source as others may see it: a URL without its user and password."""
    parts = urlsplit(uri)
    if not parts.netloc or "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def camera_json(figures: dict[str, Any]) -> dict[str, Any]:
    """A camera as /api/cameras lists it, from its figures."""
    return {"state": figures["source_state"], "camera_fps": figures["camera_fps"],
            "inference_fps": figures["inference_fps"], "dropped_frames": figures["dropped_frames"],
            "uri": without_credentials(figures["source"])}
