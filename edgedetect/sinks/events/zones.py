"""Zones, masks and per-label filters: where in the frame a detection counts.

Pure geometry on normalised coordinates (0..1 of the frame), no I/O. An object stands where
the bottom centre of its box is, so a zone drawn on the floor holds the people walking on it
whatever their height, and a mask over a tree hides the tree's false detections without hiding
the person walking past in front of it.

    [detect.labels.person]  min_score / min_area / max_area: a detection of that label counts
    [[masks]]               polygon (+ labels): detections standing inside are dropped
    [[zones]]               name, polygon, labels, min_score, min_area, max_area: an object is
                            in the zone when it stands inside and passes the zone's filters

All of it applies to what becomes events, counts and zones (the events thread), never to the
live stream: the viewer shows what the model found, and draws the zones and masks over it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from edgedetect.pipeline.frames import Detection

if TYPE_CHECKING:
    from edgedetect.config import Config

Point = tuple[float, float]
Polygon = tuple[Point, ...]
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_EPS = 1e-12


# --- geometry ----------------------------------------------------------------------------------


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(p: Point, a: Point, b: Point) -> bool:
    return (min(a[0], b[0]) - _EPS <= p[0] <= max(a[0], b[0]) + _EPS
            and min(a[1], b[1]) - _EPS <= p[1] <= max(a[1], b[1]) + _EPS)


def segments_meet(a: Point, b: Point, c: Point, d: Point) -> bool:
    """Whether segments ab and cd share a point (crossing or touching)."""
    d1, d2, d3, d4 = _cross(c, d, a), _cross(c, d, b), _cross(a, b, c), _cross(a, b, d)
    if ((d1 > _EPS and d2 < -_EPS) or (d1 < -_EPS and d2 > _EPS)) and \
            ((d3 > _EPS and d4 < -_EPS) or (d3 < -_EPS and d4 > _EPS)):
        return True
    return ((abs(d1) <= _EPS and _on_segment(a, c, d)) or (abs(d2) <= _EPS and _on_segment(b, c, d))
            or (abs(d3) <= _EPS and _on_segment(c, a, b)) or (abs(d4) <= _EPS and _on_segment(d, a, b)))


def polygon_area(poly: Sequence[Point]) -> float:
    n = len(poly)
    return abs(sum(poly[i][0] * poly[(i + 1) % n][1] - poly[(i + 1) % n][0] * poly[i][1] for i in range(n))) / 2


def polygon_problem(points: Sequence[Sequence[float]]) -> str | None:
    """What is wrong with a polygon from the config, as the end of a one-line error; None if
    it is usable: at least 3 [x, y] points inside 0..1, no two edges crossing, some area."""
    if len(points) < 3:
        return f"has {len(points)} point{'s' if len(points) != 1 else ''}; expected at least 3 [x, y] pairs"
    for i, p in enumerate(points):
        if len(p) != 2:
            return f"point {i + 1} is {list(p)!r}; expected an [x, y] pair"
        if not (0.0 <= p[0] <= 1.0 and 0.0 <= p[1] <= 1.0):
            return f"point {i + 1} [{p[0]:g}, {p[1]:g}] is outside 0..1; expected fractions of the frame"
    poly = [(float(p[0]), float(p[1])) for p in points]
    n = len(poly)
    for i in range(n):
        if poly[i] == poly[(i + 1) % n]:
            return f"repeats point {i + 1} at once; expected distinct corners"
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        for j in range(i + 1, n):
            if j == i or (j + 1) % n == i or j == (i + 1) % n:
                continue  # neighbouring edges share a corner
            c, d = poly[j], poly[(j + 1) % n]
            if segments_meet(a, b, c, d):
                return (f"is self-intersecting (edge {i + 1}-{(i + 1) % n + 1} crosses edge "
                        f"{j + 1}-{(j + 1) % n + 1}); expected the corners in order around the area")
    if polygon_area(poly) < 1e-6:
        return "has no area (its points are in a line); expected an area"
    return None


def inside(p: Point, poly: Polygon) -> bool:
    """Point in polygon (even-odd rule); a point on the boundary may fall either way."""
    x, y = p
    hit = False
    j = len(poly) - 1
    for i in range(len(poly)):
        xi, yi = poly[i]
        xj, yj = poly[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            hit = not hit
        j = i
    return hit


def foot(box: tuple[float, float, float, float]) -> Point:
    """Where an object stands: the bottom centre of its box."""
    return ((box[0] + box[2]) / 2, box[3])


def area(box: tuple[float, float, float, float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


# --- the configured areas --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    min_score: float = 0.0
    min_area: float = 0.0
    max_area: float = 1.0

    def accepts(self, d: Detection) -> bool:
        a = area(d.box)
        return d.score >= self.min_score and self.min_area <= a <= self.max_area


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    polygon: Polygon
    labels: frozenset[str] = frozenset()
    limits: Limits = Limits()

    def holds(self, d: Detection) -> bool:
        return ((not self.labels or d.label in self.labels) and self.limits.accepts(d)
                and inside(foot(d.box), self.polygon))


@dataclass(frozen=True, slots=True)
class Mask:
    polygon: Polygon
    labels: frozenset[str] = frozenset()

    def hides(self, d: Detection) -> bool:
        return (not self.labels or d.label in self.labels) and inside(foot(d.box), self.polygon)


def _poly(points: Iterable[Sequence[float]]) -> Polygon:
    return tuple((float(p[0]), float(p[1])) for p in points)


@dataclass(frozen=True, slots=True)
class Scene:
    """Everything the config says about where detections count."""

    zones: tuple[Zone, ...] = ()
    masks: tuple[Mask, ...] = ()
    label_limits: tuple[tuple[str, Limits], ...] = ()

    @classmethod
    def from_config(cls, cfg: "Config") -> "Scene":
        zones = tuple(Zone(z.name, _poly(z.polygon), frozenset(z.labels), Limits(z.min_score, z.min_area, z.max_area))
                      for z in cfg.zones)
        masks = tuple(Mask(_poly(m.polygon), frozenset(m.labels)) for m in cfg.masks)
        limits = tuple((label, Limits(f.min_score, f.min_area, f.max_area)) for label, f in cfg.detect.labels.items())
        return cls(zones, masks, limits)

    @property
    def empty(self) -> bool:
        return not (self.zones or self.masks or self.label_limits)

    def keep(self, detections: Iterable[Detection]) -> list[Detection]:
        """The detections that count: those passing their label's filters and not masked."""
        limits = dict(self.label_limits)
        out = []
        for d in detections:
            lim = limits.get(d.label)
            if lim is not None and not lim.accepts(d):
                continue
            if any(m.hides(d) for m in self.masks):
                continue
            out.append(d)
        return out

    def zones_of(self, d: Detection) -> tuple[str, ...]:
        return tuple(z.name for z in self.zones if z.holds(d))

    def zones_at(self, label: str, score: float, box: tuple[float, float, float, float]) -> tuple[str, ...]:
        """The zones an object of `label` with `score` and `box` is in."""
        return self.zones_of(Detection(-1, label, score, box))

    def as_json(self) -> dict[str, Any]:
        """For the viewer's overlay."""
        return {
            "zones": [{"name": z.name, "polygon": [list(p) for p in z.polygon], "labels": sorted(z.labels)}
                      for z in self.zones],
            "masks": [{"polygon": [list(p) for p in m.polygon], "labels": sorted(m.labels)} for m in self.masks],
        }


# --- the overlay route (the live viewer draws the zones with a toggle) -------------------------


def attach(hooks: Any) -> None:
    """GET /api/zones for the viewer page; nothing else runs."""
    import json

    from edgedetect.sinks.viewer import Request, Response

    body = json.dumps(Scene.from_config(hooks.cfg).as_json()).encode()

    def zones_route(req: Request) -> Response:
        return Response(200, body, "application/json")

    hooks.add_route("/api/zones", zones_route)
    return None
