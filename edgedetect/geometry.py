"""Polygons: the rules a zone or mask outline from the config must meet, and whether a point lies
inside one. Plain geometry on normalised coordinates (0..1 of the frame) with no project imports,
so that the config can check outlines without importing the tracking code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

Point = tuple[float, float]
Polygon = tuple[Point, ...]
Edge = tuple[float, float, float, float]  # x0, y0, x1, y1
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what a zone may be called
# Every zone and mask is tested for every tracked object of every frame, and a polygon's outline
# checks cost more than linearly: bounded so that a config cannot cost the Pi its frame rate.
MAX_POINTS = 100
MAX_ZONES = 50
MAX_MASKS = 50
_BANDS = 32  # horizontal bands a prepared outline files its edges in
_EPS = 1e-12


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
    if len(points) > MAX_POINTS:
        return f"has {len(points)} points; expected at most {MAX_POINTS}"
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
    crossing = first_crossing(poly)
    if crossing:
        i, j = crossing
        return (f"is self-intersecting (edge {i + 1}-{(i + 1) % n + 1} crosses edge "
                f"{j + 1}-{(j + 1) % n + 1}); expected the corners in order around the area")
    if polygon_area(poly) < 1e-6:
        return "has no area (its points are in a line); expected an area"
    return None


def first_crossing(poly: Sequence[Point]) -> tuple[int, int] | None:
    """The first pair (i < j) of edges that are not neighbours and meet, edge i running from
    corner i to corner i + 1; None if there is none. Only edges whose extents overlap are
    compared (a sweep over the edges sorted by their left end), so an ordinary outline costs
    n log n rather than n * n."""
    n = len(poly)
    spans = [(min(a[0], b[0]), max(a[0], b[0]), min(a[1], b[1]), max(a[1], b[1]))
             for a, b in zip(poly, poly[1:] + poly[:1], strict=True)]
    order = sorted(range(n), key=lambda k: spans[k][0])
    pairs = []
    for k, i in enumerate(order):
        _, right, low, high = spans[i]
        for j in order[k + 1:]:
            left_j, _, low_j, high_j = spans[j]
            if left_j > right + _EPS:
                break
            if low_j <= high + _EPS and low <= high_j + _EPS and (i - j) % n not in (1, n - 1):
                pairs.append((min(i, j), max(i, j)))
    for i, j in sorted(pairs):
        if segments_meet(poly[i], poly[(i + 1) % n], poly[j], poly[(j + 1) % n]):
            return i, j
    return None


def _odd_crossings(x: float, y: float, edges: Iterable[Edge]) -> bool:
    """Even-odd rule: whether a ray from (x, y) to the right crosses the edges an odd number
    of times."""
    hit = False
    for xi, yi, xj, yj in edges:
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            hit = not hit
    return hit


def _edges(poly: Polygon) -> list[Edge]:
    return [(*poly[i - 1], *poly[i]) for i in range(len(poly))]


def inside(p: Point, poly: Polygon) -> bool:
    """Point in polygon (even-odd rule); a point on the boundary may fall either way. For one
    test; Outline answers many tests on the same polygon."""
    return _odd_crossings(p[0], p[1], _edges(poly))


@dataclass(frozen=True, slots=True)
class Outline:
    """A polygon prepared for containment tests on every frame: its bounding box turns most
    points away at once, and its edges are filed in horizontal bands of the box, so that a
    point meets only the few edges that reach its own band (a ray at height y can cross no
    other)."""

    polygon: Polygon
    box: Edge  # x0, y0, x1, y1
    scale: float  # bands per unit of height
    bands: tuple[tuple[Edge, ...], ...]

    @classmethod
    def of(cls, polygon: Polygon) -> "Outline":
        xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
        box = (min(xs), min(ys), max(xs), max(ys))
        height = box[3] - box[1]
        scale = _BANDS / height if height > 0 else 0.0
        bands: list[list[Edge]] = [[] for _ in range(_BANDS)]
        for e in _edges(polygon):
            if e[1] != e[3]:  # a level edge is never crossed
                for k in range(_band(min(e[1], e[3]), box[1], scale), _band(max(e[1], e[3]), box[1], scale) + 1):
                    bands[k].append(e)
        return cls(polygon, box, scale, tuple(tuple(b) for b in bands))

    def holds(self, p: Point) -> bool:
        x, y = p
        x0, y0, x1, y1 = self.box
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            return False
        return _odd_crossings(x, y, self.bands[_band(y, y0, self.scale)])


def _band(y: float, y0: float, scale: float) -> int:
    """The band of height y; edges and points go through the same rounding, so an edge that
    reaches y is filed in y's band."""
    return min(_BANDS - 1, int((y - y0) * scale))
