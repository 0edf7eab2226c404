"""A light IoU tracker that turns per-frame detections into objects, and objects into events.

Pure: no threads, no clock, no I/O. Feed it each inferred frame's detections with the frame's
capture time; it returns what changed:

    start   an object of an allowed label has been matched in `min_frames` frames
    update  a started object's top score rose by `update_delta` since its last start/update
            message (at most one update every `update_interval` s)
    end     a started object has not been matched for `max_missing` frames in a row

so a person walking through the scene is one event (start, a few updates, end), not a message
per frame. Matching is greedy and same-label only, so it costs microseconds for the few
objects a frame holds: first by IoU (>= `iou`), then, for what is left, a box of a like size
whose centre is within half a diagonal (an object that moved fast or was missed a frame). A
box overlapping an object already matched in the frame is a duplicate, not a new object. A
tentative object (not started yet) is forgotten after `min_frames` frames in a row without a
match, so detector blips make no events. On vtest.avi this takes the person events from 249
(IoU alone) to 89.

Event numbers (`TrackEvent.seq`) count 1, 2, 3 ... in start order, from a counter the trackers
of several cameras may share (so that numbers never repeat in one daemon); objects that never
start use none.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator, Literal, Sequence

from edgedetect.frames import Detection

Box = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax, normalised
Kind = Literal["start", "update", "end"]


NEAR_LIMIT = 0.5  # second-chance match: centre distance over box size, and sizes within 2x


def iou(a: Box, b: Box) -> float:
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _near(a: Box, b: Box) -> float:
    """Centre distance relative to the larger box's diagonal; inf for boxes of unlike size."""
    wa, ha, wb, hb = a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]
    if min(wa, ha, wb, hb) <= 0:
        return float("inf")
    if not 0.5 <= (wa * ha) / (wb * hb) <= 2.0:
        return float("inf")
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    diag = max(wa * wa + ha * ha, wb * wb + hb * hb) ** 0.5
    return (dx * dx + dy * dy) ** 0.5 / diag


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    labels: frozenset[str] = frozenset()  # empty: every label makes events
    min_frames: int = 3
    max_missing: int = 10
    iou: float = 0.3
    update_delta: float = 0.05  # top-score rise that earns an update message
    update_interval: float = 1.0  # seconds between two updates of one event

    def __post_init__(self) -> None:
        if self.min_frames < 1 or self.max_missing < 1 or not 0.0 < self.iou <= 1.0:
            raise ValueError(f"invalid tracker config {self!r}")


@dataclass(slots=True)
class Track:
    """One object followed across frames."""

    key: int  # internal, for every track (started or not)
    label: str
    box: Box
    score: float
    top_score: float
    top_box: Box
    first_t: float
    last_t: float
    first_frame: int
    last_frame: int
    hits: int = 1
    misses: int = 0  # frames in a row without a match
    seq: int = 0  # event number once started
    last_update_t: float = 0.0
    reported_score: float = 0.0  # top score in the latest start/update

    @property
    def started(self) -> bool:
        return self.seq > 0


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """What changed about one object; times are the capture times (clock.now()) of frames."""

    kind: Kind
    seq: int
    label: str
    score: float  # latest
    top_score: float
    box: Box  # latest
    top_box: Box  # where the top score was seen
    start_t: float  # first frame the object was seen in
    last_t: float  # latest frame it was seen in
    end_t: float | None  # = last_t for "end"
    frames: int  # frames it was matched in
    frame: int  # index of the frame that caused this event


class Tracker:
    def __init__(self, cfg: TrackerConfig, numbers: Iterator[int] | None = None):
        self.cfg = cfg
        self._tracks: list[Track] = []
        self._next_key = 1
        self._numbers = numbers if numbers is not None else itertools.count(1)
        self.started = Counter[str]()  # events started per label
        self.ended = Counter[str]()

    @property
    def tracks(self) -> Sequence[Track]:
        return tuple(self._tracks)

    def counts(self) -> dict[str, int]:
        """Objects of each label whose event is live (started, not ended)."""
        c = Counter(t.label for t in self._tracks if t.started)
        return dict(c)

    def wanted(self, label: str) -> bool:
        return not self.cfg.labels or label in self.cfg.labels

    def update(self, detections: Iterable[Detection], t: float, frame: int = -1) -> list[TrackEvent]:
        """One frame's detections at capture time `t`; returns the events it causes."""
        cfg = self.cfg
        dets = [d for d in detections if self.wanted(d.label)]
        tracks = self._tracks
        out: list[TrackEvent] = []
        used_t: set[int] = set()
        used_d: set[int] = set()

        def assign(pairs: list[tuple[float, int, int]]) -> None:
            for _, ti, di in pairs:
                if ti in used_t or di in used_d:
                    continue
                used_t.add(ti)
                used_d.add(di)
                ev = self._matched(tracks[ti], dets[di], t, frame)
                if ev is not None:
                    out.append(ev)

        # First the boxes that overlap, best overlap first.
        by_iou = [(-o, ti, di) for ti, tr in enumerate(tracks) for di, d in enumerate(dets)
                  if d.label == tr.label and (o := iou(tr.box, d.box)) >= cfg.iou]
        assign(sorted(by_iou))
        # Then a second chance for objects whose box moved or changed shape more than the IoU
        # allows (partial occlusion, a frame the detector missed): a near box of a like size.
        by_near = [(dist, ti, di) for ti, tr in enumerate(tracks) if ti not in used_t
                   for di, d in enumerate(dets) if di not in used_d and d.label == tr.label
                   and (dist := _near(tr.box, d.box)) <= NEAR_LIMIT]
        assign(sorted(by_near))

        followed = [(tracks[ti].label, tracks[ti].box) for ti in used_t]
        keep: list[Track] = []
        for ti, tr in enumerate(tracks):
            if ti in used_t:
                keep.append(tr)
                continue
            tr.misses += 1
            if tr.started and tr.misses >= cfg.max_missing:
                self.ended[tr.label] += 1
                out.append(self._event("end", tr, frame))
            elif tr.started or tr.misses < cfg.min_frames:
                keep.append(tr)
            # else: a tentative object that vanished (a detector blip) is forgotten silently
        for di in sorted((di for di in range(len(dets)) if di not in used_d), key=lambda di: -dets[di].score):
            d = dets[di]
            if any(label == d.label and iou(b, d.box) >= cfg.iou for label, b in followed):
                continue  # a second box on an object already followed is not a new object
            tr = Track(self._next_key, d.label, d.box, d.score, d.score, d.box, t, t, frame, frame)
            self._next_key += 1
            followed.append((d.label, d.box))
            keep.append(tr)
            if cfg.min_frames <= 1:
                out.append(self._start(tr, t, frame))
        self._tracks = keep
        return out

    def flush(self) -> list[TrackEvent]:
        """End every live event (the daemon is stopping) and forget all objects."""
        out = []
        for tr in self._tracks:
            if tr.started:
                self.ended[tr.label] += 1
                out.append(self._event("end", tr, tr.last_frame))
        self._tracks = []
        return out

    # --- internals ---------------------------------------------------------------------------

    def _matched(self, tr: Track, d: Detection, t: float, frame: int) -> TrackEvent | None:
        tr.box, tr.score = d.box, d.score
        tr.last_t, tr.last_frame = t, frame
        tr.hits += 1
        tr.misses = 0
        if d.score > tr.top_score:
            tr.top_score, tr.top_box = d.score, d.box
        if not tr.started:
            if tr.hits >= self.cfg.min_frames:
                return self._start(tr, t, frame)
            return None
        if (tr.top_score - tr.reported_score >= self.cfg.update_delta - 1e-9
                and t - tr.last_update_t >= self.cfg.update_interval):
            tr.last_update_t = t
            tr.reported_score = tr.top_score
            return self._event("update", tr, frame)
        return None

    def _start(self, tr: Track, t: float, frame: int) -> TrackEvent:
        tr.seq = next(self._numbers)
        tr.last_update_t = t
        tr.reported_score = tr.top_score
        self.started[tr.label] += 1
        return self._event("start", tr, frame)

    @staticmethod
    def _event(kind: Kind, tr: Track, frame: int) -> TrackEvent:
        return TrackEvent(kind, tr.seq, tr.label, tr.score, tr.top_score, tr.box, tr.top_box, tr.first_t,
                          tr.last_t, tr.last_t if kind == "end" else None, tr.hits, frame)
