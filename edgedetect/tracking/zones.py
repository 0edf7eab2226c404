"""Zones, masks and per-label filters: where in the frame a detection counts.

On normalised coordinates (0..1 of the frame), no I/O; the polygons are geometry.py's. An object
stands where the bottom centre of its box is, so a zone drawn on the floor holds the people walking
on it whatever their height, and a mask over a tree hides the tree's false detections without
hiding the person walking past in front of it.

    [detect.labels.person]  min_score / min_area / max_area: a detection of that label counts
    [[masks]]               polygon (+ labels): detections standing inside are dropped
    [[zones]]               name, polygon, labels, min_score, min_area, max_area: an object is
                            in the zone when it stands inside and passes the zone's filters

All of it applies to what becomes events, counts and zones (the events thread), never to the
live stream: the viewer shows what the model found, and draws the zones and masks over it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from edgedetect.geometry import Outline, Point, Polygon
from edgedetect.frames import Detection

if TYPE_CHECKING:
    from edgedetect.config import Config


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

    def accepts(self, score: float, box_area: float) -> bool:
        return score >= self.min_score and self.min_area <= box_area <= self.max_area


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    outline: Outline
    labels: frozenset[str] = frozenset()
    limits: Limits = Limits()

    @property
    def polygon(self) -> Polygon:
        return self.outline.polygon


@dataclass(frozen=True, slots=True)
class Mask:
    outline: Outline
    labels: frozenset[str] = frozenset()

    @property
    def polygon(self) -> Polygon:
        return self.outline.polygon


def _outline(points: Iterable[Sequence[float]]) -> Outline:
    return Outline.of(tuple((float(p[0]), float(p[1])) for p in points))


@dataclass(frozen=True, slots=True)
class Scene:
    """Everything the config says about where detections count."""

    zones: tuple[Zone, ...] = ()
    masks: tuple[Mask, ...] = ()
    label_limits: tuple[tuple[str, Limits], ...] = ()
    _limits_of: dict[str, Limits] = field(init=False, repr=False, compare=False)  # label_limits, looked up per detection

    def __post_init__(self) -> None:
        object.__setattr__(self, "_limits_of", dict(self.label_limits))

    @classmethod
    def from_config(cls, cfg: "Config") -> "Scene":
        zones = tuple(Zone(z.name, _outline(z.polygon), frozenset(z.labels),
                           Limits(z.min_score, z.min_area, z.max_area)) for z in cfg.zones)
        masks = tuple(Mask(_outline(m.polygon), frozenset(m.labels)) for m in cfg.masks)
        limits = tuple((label, Limits(f.min_score, f.min_area, f.max_area)) for label, f in cfg.detect.labels.items())
        return cls(zones, masks, limits)

    @property
    def empty(self) -> bool:
        return not (self.zones or self.masks or self.label_limits)

    def keep(self, detections: Iterable[Detection]) -> list[Detection]:
        """The detections that count: those passing their label's filters and not masked."""
        out = []
        for d in detections:
            lim = self._limits_of.get(d.label)
            if lim is not None and not lim.accepts(d.score, area(d.box)):
                continue
            p = foot(d.box)
            if any((not m.labels or d.label in m.labels) and m.outline.holds(p) for m in self.masks):
                continue
            out.append(d)
        return out

    def zones_at(self, label: str, score: float, box: tuple[float, float, float, float]) -> tuple[str, ...]:
        """The zones an object of `label` with `score` and `box` is in."""
        p, a = foot(box), area(box)
        return tuple(z.name for z in self.zones
                     if (not z.labels or label in z.labels) and z.limits.accepts(score, a) and z.outline.holds(p))

    def zones_of(self, d: Detection) -> tuple[str, ...]:
        return self.zones_at(d.label, d.score, d.box)

    def as_json(self) -> dict[str, Any]:
        """For the viewer's overlay."""
        return {
            "zones": [{"name": z.name, "polygon": [list(p) for p in z.polygon], "labels": sorted(z.labels)}
                      for z in self.zones],
            "masks": [{"polygon": [list(p) for p in m.polygon], "labels": sorted(m.labels)} for m in self.masks],
        }
