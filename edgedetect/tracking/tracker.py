"""A tracker with a motion model that turns per-frame detections into objects, and objects into
events.

Pure: no threads, no clock, no I/O. Feed it each inferred frame's detections with the frame's
capture time (and its scene time, when that differs: an unpaced file's media time); it returns
what changed:

    start   an object of an allowed label has been matched in `min_hits` frames
    update  a started object's top score rose by `update_delta` since its last start/update
            message (at most one update every `update_interval` s)
    end     a started object has not been matched for more than `max_lost_s` seconds

Each object carries a Kalman filter over its box (centre x, centre y, width / height, height and
their velocities). Before a frame is matched every object is predicted to the frame's capture
time, whatever the time since the last frame (the motion gate skips still frames, inference
rates vary), and detections are matched to the predicted boxes by IoU, same label only, in the
two stages of ByteTrack (Zhang et al., 2022):

    1. detections scoring `high_score` or more, against every started object: those seen in the
       previous frame first, then the lost ones; a lost object also takes a box whose centre lies
       within the uncertainty its prediction has gathered (the detector may draw a partly hidden
       person's box off the predicted one);
    2. the weaker ones (below `high_score`, and any `low` detections the caller passes), against
       the started objects still unmatched that were seen in the previous frame: a partly hidden
       person scores low, and that keeps their object alive, but a weak box never starts one.

Then objects not started yet take what is left of the strong detections, and the strong
detections still left start new objects, unless they overlap an object matched in this frame
(a second box on one person is not a second person). An object not started yet is forgotten the
first frame it is not matched (detector blips make no events); a started one is kept, lost and
predicted, for `max_lost_s` seconds of scene time, so motion gating, a missed frame or a short
occlusion do not split it.

Matching is greedy by IoU, best overlap first, within the `iou` gate: a frame holds a few objects,
so it costs microseconds, and with boxes predicted to where the objects are now the best pairs are
seldom contested (docs/events.md has the figures on vtest.avi).

Event numbers (`TrackEvent.seq`) count 1, 2, 3 ... in start order, from a counter the trackers
of several cameras may share (so that numbers never repeat in one daemon); objects that never
start use none.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Literal, Sequence

import numpy as np

from edgedetect.frames import Detection

Box = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax, normalised
Kind = Literal["start", "update", "end"]

LOW_IOU = 0.5  # stage 2: a weak box must overlap the predicted box this well to count
LOST_GATE = 5.99  # stage 1c: squared distance (in standard deviations) of a box's centre from a lost
#                   object's predicted one; 95 % of true matches fall within it (chi-square, 2 degrees)
DUPLICATE_IOU = 0.5  # a strong box this much over an object matched in the frame starts nothing

# The motion model's noise, relative to the object's height (so near and far objects are alike).
MEASURE_STD = 0.1  # a detected box's centre and height, in heights (a small figure's box jitters)
MEASURE_ASPECT_STD = 0.1  # its width / height
POSITION_DRIFT = 0.1  # heights per sqrt(second): how far an object wanders from its course
VELOCITY_DRIFT = 0.5  # heights per second per sqrt(second): how fast its speed changes
SIZE_DRIFT = 0.05  # the same for its height and aspect, and their rates: objects seldom change size fast
START_VELOCITY_STD = 1.0  # heights per second: a new object's speed is unknown (a walker: about 1)

# The drift of (cx, cy, w / h, h) and their rates: a part in heights per sqrt(second), a part fixed.
_DRIFT_PER_HEIGHT = np.array([POSITION_DRIFT, POSITION_DRIFT, 0.0, SIZE_DRIFT,
                              VELOCITY_DRIFT, VELOCITY_DRIFT, 0.0, SIZE_DRIFT])
_DRIFT_PER_HEIGHT.flags.writeable = False
_DRIFT_FIXED = np.array([0.0, 0.0, SIZE_DRIFT, 0.0, 0.0, 0.0, SIZE_DRIFT, 0.0])
_DRIFT_FIXED.flags.writeable = False


def iou(a: Box, b: Box) -> float:
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N, 4) with every box in b (M, 4)."""
    ix = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    iy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    labels: frozenset[str] = frozenset()  # empty: every label makes events
    min_hits: int = 3  # frames an object is matched in before its event starts
    max_lost_s: float = 3.0  # seconds a started object is kept unseen before its event ends
    iou: float = 0.2  # least overlap of a detection with an object's predicted box
    high_score: float = 0.6  # detections below it only keep started objects alive
    update_delta: float = 0.05  # top-score rise that earns an update message
    update_interval: float = 1.0  # seconds between two updates of one event

    def __post_init__(self) -> None:
        if (self.min_hits < 1 or not self.max_lost_s >= 0.0 or not 0.0 < self.iou <= 1.0
                or not 0.0 <= self.high_score <= 1.0):
            raise ValueError(f"invalid tracker config {self!r}")


class _Kalman:
    """Constant-velocity Kalman filter on (cx, cy, w / h, h) of one box, with time steps of any length."""

    __slots__ = ("mean", "cov")

    def __init__(self, box: Box):
        z = _measure(box)
        h = z[3]
        self.mean = np.concatenate([z, np.zeros(4)])
        std = np.array([2 * MEASURE_STD * h, 2 * MEASURE_STD * h, 2 * MEASURE_ASPECT_STD, 2 * MEASURE_STD * h,
                        START_VELOCITY_STD * h, START_VELOCITY_STD * h, SIZE_DRIFT, SIZE_DRIFT * h])
        self.cov = np.diag(std * std)

    def predict(self, dt: float) -> None:
        if dt <= 0:
            return
        step = np.eye(8)
        step[:4, 4:] = np.eye(4) * dt
        self.mean = step @ self.mean
        drift = _DRIFT_PER_HEIGHT * max(self.mean[3], 1e-3) + _DRIFT_FIXED
        self.cov = step @ self.cov @ step.T + np.diag(drift * drift * dt)

    def correct(self, box: Box) -> None:
        z = _measure(box)
        h = z[3]
        r = (MEASURE_STD * h, MEASURE_STD * h, MEASURE_ASPECT_STD, MEASURE_STD * h)
        m, p = self.mean, self.cov
        # The measurement noise is diagonal, so the four values can be taken one at a time: the
        # same result as the joint update, without a matrix inverse (numpy's costs more than this).
        for i in range(4):
            gain = p[:, i] / (p[i, i] + r[i] * r[i])
            m += gain * (z[i] - m[i])
            p -= np.outer(gain, p[i, :])

    def distance2(self, boxes: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each box's centre (M, 4 boxes) from the predicted centre,
        measurement noise included."""
        noise = (MEASURE_STD * self.mean[3]) ** 2
        a, b, d = self.cov[0, 0] + noise, self.cov[0, 1], self.cov[1, 1] + noise
        dx = (boxes[:, 0] + boxes[:, 2]) / 2 - self.mean[0]
        dy = (boxes[:, 1] + boxes[:, 3]) / 2 - self.mean[1]
        return (d * dx * dx - 2 * b * dx * dy + a * dy * dy) / (a * d - b * b)

    def box(self) -> Box:
        cx, cy, a, h = self.mean[:4].tolist()
        w = a * h
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _measure(box: Box) -> np.ndarray:
    x0, y0, x1, y1 = box
    h = max(y1 - y0, 1e-6)
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / h, h])


@dataclass(slots=True)
class Track:
    """One object followed across frames."""

    key: int  # internal, for every track (started or not)
    label: str
    box: Box  # the latest matched detection's (not the prediction)
    score: float
    top_score: float
    top_box: Box
    first_t: float
    last_t: float
    last_scene_t: float  # last_t on the scene's clock, which prediction, loss and updates run on
    first_frame: int
    last_frame: int
    motion: _Kalman = field(repr=False)
    predicted_t: float  # the scene time `motion` stands at
    hits: int = 1
    misses: int = 0  # frames in a row without a match
    seq: int = 0  # event number once started
    last_update_t: float = 0.0  # scene time
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

    def update(self, detections: Iterable[Detection], t: float, frame: int = -1,
               low: Iterable[Detection] = (), t_scene: float | None = None) -> list[TrackEvent]:
        """One frame's detections at capture time `t`; returns the events it causes. `low`: the
        frame's detections under the detector's threshold, which may keep started objects alive.
        `t_scene`: the frame's time in the scene when it is not `t` (events still report `t`)."""
        cfg = self.cfg
        st = t if t_scene is None else t_scene
        dets = [d for d in detections if self.wanted(d.label)]
        strong = [i for i, d in enumerate(dets) if d.score >= cfg.high_score]
        weak = [i for i, d in enumerate(dets) if d.score < cfg.high_score]
        for d in low:
            if self.wanted(d.label):
                weak.append(len(dets))
                dets.append(d)
        tracks = self._tracks
        for tr in tracks:
            tr.motion.predict(st - tr.predicted_t)
            tr.predicted_t = max(tr.predicted_t, st)
        out: list[TrackEvent] = []
        det_boxes = np.array([d.box for d in dets], dtype=float).reshape(-1, 4)
        predicted = np.array([tr.motion.box() for tr in tracks], dtype=float).reshape(-1, 4)
        same = np.array([[d.label == tr.label for d in dets] for tr in tracks], dtype=bool)
        same = same.reshape(len(tracks), len(dets))
        overlap = np.where(same, _ious(predicted, det_boxes), 0.0)
        matched: dict[int, int] = {}  # track index -> detection index

        def assign(fit: np.ndarray, ts: list[int], ds: list[int], gate: float) -> None:
            """Greedy: the best fitting pair first, each track and detection once."""
            taken = set(matched.values())
            pairs = sorted(((fit[ti, di], ti, di) for ti in ts if ti not in matched for di in ds
                            if di not in taken and fit[ti, di] >= gate), reverse=True)
            for _, ti, di in pairs:
                if ti not in matched and di not in taken:
                    matched[ti] = di
                    taken.add(di)

        confirmed = [ti for ti, tr in enumerate(tracks) if tr.started]
        lost = [ti for ti in confirmed if tracks[ti].misses]
        # 1. Strong boxes: objects seen in the previous frame first (a lost object's prediction is
        # the less sure), then all; then, for lost objects, a box near enough to the prediction
        # for the uncertainty it has gathered since, when the detector drew it off the overlap.
        assign(overlap, [ti for ti in confirmed if not tracks[ti].misses], strong, cfg.iou)
        assign(overlap, confirmed, strong, cfg.iou)
        if lost and strong:
            heights = det_boxes[:, 3] - det_boxes[:, 1]
            near = np.full(overlap.shape, -np.inf)
            for ti in lost:
                kf = tracks[ti].motion
                alike = same[ti] & (heights <= 2 * kf.mean[3]) & (kf.mean[3] <= 2 * heights)
                near[ti] = np.where(alike, -kf.distance2(det_boxes), -np.inf)
            assign(near, lost, strong, -LOST_GATE)
        # 2. Weak boxes keep the objects seen in the previous frame.
        assign(overlap, [ti for ti in confirmed if not tracks[ti].misses], weak, max(cfg.iou, LOW_IOU))
        # 3. Objects not started yet take what is left of the strong boxes.
        assign(overlap, [ti for ti, tr in enumerate(tracks) if not tr.started], strong, cfg.iou)
        keep: list[Track] = []
        for ti, tr in enumerate(tracks):
            if ti in matched:
                ev = self._matched(tr, dets[matched[ti]], t, st, frame)
                if ev is not None:
                    out.append(ev)
                keep.append(tr)
                continue
            tr.misses += 1
            if not tr.started:
                continue  # a tentative object that vanished (a detector blip) is forgotten silently
            if st - tr.last_scene_t > cfg.max_lost_s:
                self.ended[tr.label] += 1
                out.append(self._event("end", tr, frame))
            else:
                keep.append(tr)
        followed = [(dets[di].label, dets[di].box) for di in matched.values()]
        taken = set(matched.values())
        for di in sorted((di for di in strong if di not in taken), key=lambda di: -dets[di].score):
            d = dets[di]
            if any(label == d.label and iou(b, d.box) >= DUPLICATE_IOU for label, b in followed):
                continue
            tr = Track(self._next_key, d.label, d.box, d.score, d.score, d.box, t, t, st, frame, frame,
                       _Kalman(d.box), st)
            self._next_key += 1
            followed.append((d.label, d.box))
            keep.append(tr)
            if cfg.min_hits <= 1:
                out.append(self._start(tr, st, frame))
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

    def _matched(self, tr: Track, d: Detection, t: float, st: float, frame: int) -> TrackEvent | None:
        tr.motion.correct(d.box)
        tr.box, tr.score = d.box, d.score
        tr.last_t, tr.last_scene_t, tr.last_frame = t, st, frame
        tr.hits += 1
        tr.misses = 0
        if d.score > tr.top_score:
            tr.top_score, tr.top_box = d.score, d.box
        if not tr.started:
            if tr.hits >= self.cfg.min_hits:
                return self._start(tr, st, frame)
            return None
        if (tr.top_score - tr.reported_score >= self.cfg.update_delta - 1e-9
                and st - tr.last_update_t >= self.cfg.update_interval):
            tr.last_update_t = st
            tr.reported_score = tr.top_score
            return self._event("update", tr, frame)
        return None

    def _start(self, tr: Track, st: float, frame: int) -> TrackEvent:
        tr.seq = next(self._numbers)
        tr.last_update_t = st
        tr.reported_score = tr.top_score
        self.started[tr.label] += 1
        return self._event("start", tr, frame)

    @staticmethod
    def _event(kind: Kind, tr: Track, frame: int) -> TrackEvent:
        return TrackEvent(kind, tr.seq, tr.label, tr.score, tr.top_score, tr.box, tr.top_box, tr.first_t,
                          tr.last_t, tr.last_t if kind == "end" else None, tr.hits, frame)
