"""The objects of one camera followed into events: the scene's filters, then the tracker, and
for each object the zones it has entered and (for the labels asked for) its best sighting."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np

from edgedetect.frames import Detection
from edgedetect.tracking.events import ObjectEvent, Sighting, event_id
from edgedetect.tracking.tracker import Box, Tracker, TrackerConfig, TrackEvent
from edgedetect.tracking.zones import Scene


class Follower:
    def __init__(self, cfg: TrackerConfig, scene: Scene, keep_best: Callable[[str], bool] | None = None,
                 camera: str = "", numbers: Iterator[int] | None = None):
        self.camera = camera  # the camera whose frames it is fed; each of its events names it
        self.scene = scene
        self.tracker = Tracker(cfg, numbers)  # numbers: shared by the followers of one daemon
        self._keep_best = keep_best  # labels whose best sighting a consumer keeps (frames are held for them)
        self._ids: dict[int, str] = {}  # event seq -> event id (fixed at its start)
        self._keys: dict[int, int] = {}  # event seq -> track key
        self._entered: dict[int, set[str]] = {}  # track key -> zones its object entered
        self._best: dict[int, Sighting] = {}  # track key -> best sighting

    def feed(self, index: int, t: float, image: np.ndarray, detections: Sequence[Detection],
             t_scene: float | None = None, weak: Sequence[Detection] = ()) -> list[ObjectEvent]:
        """One inferred frame (its index, capture time, pixels and detections, Frame.t_scene when
        it differs from the capture time, and the weak detections under the threshold); the
        events it causes."""
        kept = detections if self.scene.empty else self.scene.keep(detections)
        low = weak if self.scene.empty else self.scene.keep(weak)
        changes = self.tracker.update(kept, t, index, low, t_scene=t_scene)
        self._follow(index, image, kept)
        events = [self._event(ch, image) for ch in changes]
        alive = {tr.key for tr in self.tracker.tracks}
        for gone in [k for k in self._entered if k not in alive]:
            del self._entered[gone]
        for gone in [k for k in self._best if k not in alive]:
            del self._best[gone]
        return events

    def flush(self) -> list[ObjectEvent]:
        """End every live event (the source ended, or the daemon is stopping)."""
        return [self._event(ch, None) for ch in self.tracker.flush()]

    def counts(self) -> dict[str, int]:
        """Objects of each label whose event is live."""
        return self.tracker.counts()

    def positions(self, index: int) -> list[tuple[str, Box]]:
        """(event id, box) of each started object matched in the frame of this index."""
        return [(self._ids[tr.seq], tr.box) for tr in self.tracker.tracks
                if tr.started and tr.last_frame == index and not tr.misses and tr.seq in self._ids]

    def live_in_zones(self) -> dict[tuple[str, str], int]:
        """(zone, label) -> live objects standing in the zone now."""
        counts: dict[tuple[str, str], int] = {}
        for tr in self.tracker.tracks:
            if tr.started:
                for name in self.scene.zones_at(tr.label, tr.score, tr.box):
                    counts[(name, tr.label)] = counts.get((name, tr.label), 0) + 1
        return counts

    def _follow(self, index: int, image: np.ndarray, detections: Sequence[Detection]) -> None:
        """For each object matched in this frame: the zones it stands in, and its best-scoring
        sighting, a reference to the frame (frames are immutable)."""
        for tr in self.tracker.tracks:
            if tr.last_frame != index or tr.misses:
                continue
            if self.scene.zones:
                here = self.scene.zones_at(tr.label, tr.score, tr.box)
                if here:
                    self._entered.setdefault(tr.key, set()).update(here)
            if (self._keep_best is not None and self._keep_best(tr.label) and tr.score >= tr.top_score
                    and tr.box == tr.top_box):
                best = self._best.get(tr.key)
                if best is None or tr.score > best.score:
                    self._best[tr.key] = Sighting(tr.score, tr.box, image, tuple(detections))

    def _event(self, ch: TrackEvent, image: np.ndarray | None) -> ObjectEvent:
        if ch.kind == "start":
            self._ids[ch.seq] = event_id(ch.start_t, ch.seq)
            key = next((tr.key for tr in self.tracker.tracks if tr.seq == ch.seq), None)
            if key is not None:
                self._keys[ch.seq] = key
        ident = self._ids.get(ch.seq) or event_id(ch.start_t, ch.seq)
        key = self._keys.get(ch.seq)
        zones = tuple(sorted(self._entered.get(key, ()))) if key is not None else ()
        best = self._best.get(key) if key is not None else None
        if ch.kind == "end":
            self._ids.pop(ch.seq, None)
            self._keys.pop(ch.seq, None)
        return ObjectEvent(ch, ident, zones, best, image, self.camera)
