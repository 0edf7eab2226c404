"""The tracker (Kalman prediction, two-stage matching) and its event state machine: synthetic
detection sequences with known answers, then the real detector's output on vtest.avi."""

from __future__ import annotations

import cv2
import pytest

from conftest import VTEST
from edgedetect.frames import Detection
from edgedetect.detect.model import DetectFilter
from edgedetect.tracking.tracker import Tracker, TrackerConfig, TrackEvent, iou

FPS = 10.0


def person(x: float, y: float = 0.3, w: float = 0.1, h: float = 0.3, score: float = 0.8,
           label: str = "person") -> Detection:
    return Detection(0 if label == "person" else 2, label, score, (x, y, x + w, y + h))


def run(tracker: Tracker, frames: list[list[Detection]], start: int = 0) -> list[TrackEvent]:
    out = []
    for i, dets in enumerate(frames, start):
        out += tracker.update(dets, i / FPS, i)
    return out


def kinds(events: list[TrackEvent]) -> list[tuple[str, int]]:
    return [(e.kind, e.seq) for e in events]


def test_iou() -> None:
    assert iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert iou((0, 0, 2, 1), (1, 0, 3, 1)) == pytest.approx(1 / 3)


def test_one_walker_is_one_event() -> None:
    tr = Tracker(TrackerConfig(frozenset({"person"}), min_hits=3, max_lost_s=0.45))
    walk = [[person(0.1 + 0.01 * i)] for i in range(40)]
    events = run(tr, walk + [[]] * 10)
    assert kinds(events) == [("start", 1), ("end", 1)]
    start, end = events
    assert start.frame == 2 and start.frames == 3  # the third frame it was seen in
    assert end.frame == 39 + 5  # the first frame more than max_lost_s after the last sighting
    assert start.start_t == 0.0 and end.end_t == pytest.approx(39 / FPS) and end.frames == 40
    assert end.box == pytest.approx(walk[-1][0].box)
    assert tr.counts() == {} and tr.started == {"person": 1} and tr.ended == {"person": 1}


def test_blips_make_no_event_and_gaps_do_not_split_one() -> None:
    tr = Tracker(TrackerConfig(min_hits=3, max_lost_s=0.45))
    blips = [[person(0.5)], [person(0.5)], [], [], [], [person(0.5)], [], [], []]
    assert run(tr, blips) == [] and tr.tracks == ()
    tr = Tracker(TrackerConfig(min_hits=3, max_lost_s=0.45))
    seen = [[person(0.2)]] * 5
    gap = [[]] * 4  # 0.5 s from the last sighting to the next: within max_lost_s
    events = run(tr, seen + gap + seen + [[]] * 5)
    assert kinds(events) == [("start", 1), ("end", 1)]
    assert events[-1].frames == 10


def test_two_people_two_ids_and_counts() -> None:
    tr = Tracker(TrackerConfig(min_hits=2, max_lost_s=0.25))
    frames = [[person(0.1 + 0.01 * i), person(0.7 - 0.01 * i)] for i in range(10)]
    events = run(tr, frames)
    assert kinds(events) == [("start", 1), ("start", 2)]
    assert tr.counts() == {"person": 2}
    # one leaves, the other stays
    events = run(tr, [[person(0.2)]] * 3, start=10)
    assert kinds(events) == [("end", 2)]
    assert tr.counts() == {"person": 1}
    assert kinds(tr.flush()) == [("end", 1)] and tr.counts() == {}


def test_people_crossing_keep_their_ids() -> None:
    tr = Tracker(TrackerConfig(min_hits=2, max_lost_s=0.25))
    frames = []
    for i in range(30):  # two walkers on different rows cross at x = 0.45
        frames.append([person(0.1 + 0.025 * i, y=0.1), person(0.8 - 0.025 * i, y=0.5)])
    events = run(tr, frames)
    assert kinds(events) == [("start", 1), ("start", 2)]
    ends = {e.seq: e for e in tr.flush()}
    assert ends[1].box[0] > 0.7 and ends[2].box[0] < 0.2  # each id followed its own walker


def test_labels_filter_and_all_labels() -> None:
    frames = [[person(0.1), person(0.6, label="car")]] * 4
    tr = Tracker(TrackerConfig(frozenset({"person"}), min_hits=2))
    assert [e.label for e in run(tr, frames)] == ["person"]
    tr = Tracker(TrackerConfig(frozenset(), min_hits=2))
    assert sorted(e.label for e in run(tr, frames)) == ["car", "person"]
    # same place, other label: never matched to each other
    tr = Tracker(TrackerConfig(frozenset(), min_hits=1))
    assert len(run(tr, [[person(0.1)], [person(0.1, label="car")]])) == 2


def test_duplicate_boxes_on_one_object_make_one_event() -> None:
    tr = Tracker(TrackerConfig(min_hits=2, max_lost_s=0.25))
    frames = [[person(0.3), person(0.31, w=0.11, score=0.6)] for _ in range(6)]
    assert kinds(run(tr, frames)) == [("start", 1)]


def test_a_fast_object_is_followed_by_its_motion() -> None:
    tr = Tracker(TrackerConfig(min_hits=2, max_lost_s=0.5, iou=0.3))
    xs = [0.1, 0.15] + [0.15 + 0.07 * i for i in range(1, 9)]  # then 70 % of its width a frame
    frames = [[person(x)] for x in xs]
    assert all(iou(a[0].box, b[0].box) < 0.3 for a, b in zip(frames[2:], frames[3:]))
    assert kinds(run(tr, frames)) == [("start", 1)]
    far = [[person(0.9, y=0.6, w=0.05, h=0.1)]] * 3  # far away and smaller: someone else
    assert kinds(run(tr, far, start=10)) == [("start", 2)]


def test_a_walker_unseen_while_the_scene_was_still_is_found_where_it_walked_to() -> None:
    """No frame at all for 1.5 s (the motion gate let none through): the prediction runs on the
    capture times, so the walker, 3 widths on from its last box, is the same object."""
    tr = Tracker(TrackerConfig(min_hits=3, max_lost_s=3.0))
    walk = lambda t: [person(0.1 + 0.1 * t, w=0.05, h=0.15)]  # noqa: E731 - 0.1 of the frame a second
    events = []
    for i in range(20):
        events += tr.update(walk(i / FPS), i / FPS, i)
    last = walk(1.9)[0].box
    again = walk(3.4)[0].box
    assert iou(last, again) == 0.0
    events += tr.update(walk(3.4), 3.4, 20)
    events += tr.update(walk(3.5), 3.5, 21)
    assert kinds(events) == [("start", 1)] and tr.tracks[0].hits == 22 and tr.tracks[0].misses == 0


def test_the_scene_clock_drives_the_motion_model_and_events_report_capture_times() -> None:
    """An unpaced file is read as fast as the machine goes: its frames' capture times say nothing
    of the scene. Fed the file's own times as t_scene, two runs at different reading speeds make
    the same events on the same frames, each dated by its own capture times."""
    walkers = [[person(0.05 + 0.02 * i, w=0.05, h=0.15), person(0.8 - 0.015 * i, y=0.32, w=0.05, h=0.15)]
               for i in range(40)]
    walkers[12:20] = [[]] * 8  # both hidden 0.8 s, less than max_lost_s; 1 s of capture time when read slowly
    frames = walkers + [[]] * 30

    def read(capture_period: float) -> list[TrackEvent]:
        tr = Tracker(TrackerConfig(min_hits=3, max_lost_s=1.0, update_interval=0.5))
        out = []
        for i, dets in enumerate(frames):
            out += tr.update(dets, 100 + i * capture_period, i, t_scene=i / FPS)
        return out

    fast, slow = read(0.01), read(0.5)
    assert [(e.kind, e.seq, e.frame) for e in fast] == [(e.kind, e.seq, e.frame) for e in slow]
    assert kinds(fast) == [("start", 1), ("start", 2), ("end", 1), ("end", 2)]
    assert fast[-1].end_t == pytest.approx(100 + 39 * 0.01) and slow[-1].end_t == pytest.approx(100 + 39 * 0.5)
    # On capture times alone, the slow read loses both in the gap (4 s > max_lost_s) and splits them.
    tr = Tracker(TrackerConfig(min_hits=3, max_lost_s=1.0))
    split = [e for i, dets in enumerate(frames) for e in tr.update(dets, 100 + i * 0.5, i)]
    assert sum(e.kind == "start" for e in split) == 4


def test_the_daemon_passes_weak_detections_to_the_tracker_only_when_it_tracks(tmp_path) -> None:
    """[track] low_score becomes the detector's weak threshold while events are made (MQTT or the
    store), and a camera's follower feeds the weak detections to the tracker's second stage: a
    walker scoring 0.3 for 2 s, under the 0.5 threshold, stays one event."""
    import numpy as np

    from edgedetect import config
    from edgedetect.detect.resolve import detect_filter
    from edgedetect.sinks.events import tracker_settings
    from edgedetect.tracking.follow import Follower
    from edgedetect.tracking.zones import Scene

    path = tmp_path / "edgedetect.toml"
    path.write_text("")
    assert detect_filter(config.load(str(path), {})).weak_threshold is None  # nothing tracks: no cost
    path.write_text('[record]\nenabled = true\n[track]\nlow_score = 0.2\n')
    cfg = config.load(str(path), {})
    assert detect_filter(cfg).weak_threshold == 0.2
    follower = Follower(TrackerConfig(frozenset({"person"}), **tracker_settings(cfg)), Scene())
    image = np.zeros((48, 64, 3), np.uint8)
    events = []
    for i in range(60):
        x = 0.1 + 0.01 * i
        strong, weak = ([person(x)], []) if i < 10 or i >= 50 else ([], [person(x, score=0.3)])
        events += follower.feed(i, i / FPS, image, strong, weak=weak)
    assert [e.track.kind for e in events] == ["start"], events
    without = Follower(TrackerConfig(frozenset({"person"}), **tracker_settings(cfg)), Scene())
    events = [e for i in range(60) for e in without.feed(i, i / FPS, image, [person(0.1 + 0.01 * i)]
                                                          if i < 10 or i >= 50 else [])]
    assert [e.track.kind for e in events] == ["start", "end", "start"]  # 4 s unseen: two events


def test_an_object_survives_a_gap_shorter_than_max_lost_s_and_ends_after_it() -> None:
    tr = Tracker(TrackerConfig(min_hits=3, max_lost_s=2.0))
    events = []
    for i in range(10):  # seen for 1 s
        events += tr.update([person(0.3)], i / FPS, i)
    # then 1.9 s of inferred frames without it, a few of them, at irregular times
    for i, t in enumerate((1.1, 1.15, 1.6, 2.4, 2.8), 10):
        events += tr.update([], t, i)
    assert kinds(events) == [("start", 1)] and tr.tracks[0].misses == 5
    events += tr.update([person(0.3)], 2.8, 15)  # back within max_lost_s: the same event
    assert kinds(events) == [("start", 1)] and tr.tracks[0].misses == 0
    events += tr.update([], 4.7, 16)  # 1.9 s after it was last seen
    assert kinds(events) == [("start", 1)]
    events += tr.update([], 4.9, 17)  # 2.1 s
    assert kinds(events) == [("start", 1), ("end", 1)]
    assert events[-1].end_t == 2.8 and events[-1].frame == 17 and events[-1].frames == 11
    assert tr.tracks == () and tr.counts() == {}


def test_two_walkers_crossing_through_each_other_keep_their_identities() -> None:
    """On one row, at constant speeds, in opposite directions; while they overlap the detector
    sees only the one in front (and the one behind, partly, with a weak score)."""
    tr = Tracker(TrackerConfig(min_hits=3, max_lost_s=2.0))
    events: list[TrackEvent] = []
    for i in range(40):
        a, b = 0.1 + 0.02 * i, 0.8 - 0.02 * i
        dets = [person(a, w=0.08, h=0.25)]
        if abs(a - b) >= 0.08:
            dets.append(person(b, w=0.08, h=0.25))
        elif abs(a - b) >= 0.04:
            dets.append(person(b, w=0.08, h=0.25, score=0.55))
        events += tr.update(dets, i / FPS, i)
    assert kinds(events) == [("start", 1), ("start", 2)]
    by_seq = {t.seq: t.box[0] for t in tr.tracks}
    assert by_seq[1] == pytest.approx(0.1 + 0.02 * 39) and by_seq[2] == pytest.approx(0.8 - 0.02 * 39)


def test_a_weak_detection_keeps_an_object_alive_but_never_starts_one() -> None:
    tr = Tracker(TrackerConfig(min_hits=3, max_lost_s=0.5, high_score=0.6))
    events = run(tr, [[person(0.2, score=0.8)]] * 5)
    assert kinds(events) == [("start", 1)]
    # 3 s of weak boxes only (below high_score, and under the detector's threshold): still one
    # live event; a weak box elsewhere starts nothing.
    for i in range(5, 35):
        weak = [person(0.2 + 0.002 * (i - 5), score=0.55)] if i % 2 else []
        low = [] if i % 2 else [person(0.2 + 0.002 * (i - 5), score=0.3)]
        events += tr.update(weak + [person(0.7, score=0.55)], i / FPS, i, low=low + [person(0.5, score=0.3)])
    assert kinds(events) == [("start", 1)]
    assert [(t.seq, t.misses) for t in tr.tracks] == [(1, 0)] and tr.counts() == {"person": 1}
    assert tr.tracks[0].top_score == 0.8 and tr.tracks[0].score == 0.3
    events += run(tr, [[]] * 6, start=35)
    assert kinds(events) == [("start", 1), ("end", 1)]


def test_updates_when_the_score_rises_rate_limited() -> None:
    tr = Tracker(TrackerConfig(min_hits=2, max_lost_s=0.25, high_score=0.5, update_delta=0.05,
                               update_interval=1.0))
    scores = [0.55, 0.6, 0.7, 0.8, 0.9] + [0.6] * 10 + [0.95] + [0.6] * 10 + [0.97]
    events = run(tr, [[person(0.3, score=s)] for s in scores])
    # start at frame 1 (top 0.6); the rise to 0.9 came too soon after, so it is reported once
    # the interval has passed (frame 11); 0.95 at 1.5 s likewise at 2.1 s; 0.97 is too small a rise.
    assert kinds(events) == [("start", 1), ("update", 1), ("update", 1)]
    assert [(e.frame, e.top_score) for e in events] == [(1, 0.6), (11, 0.9), (21, 0.95)]
    end = tr.flush()[0]
    assert end.top_score == 0.97 and end.score == 0.97


def test_min_hits_one_starts_at_once() -> None:
    tr = Tracker(TrackerConfig(min_hits=1, max_lost_s=0.0))
    assert kinds(tr.update([person(0.2)], 0.0, 0)) == [("start", 1)]
    assert kinds(tr.update([], 0.1, 1)) == [("end", 1)]


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError):
        TrackerConfig(min_hits=0)
    with pytest.raises(ValueError):
        TrackerConfig(iou=0.0)
    with pytest.raises(ValueError):
        TrackerConfig(max_lost_s=-1.0)


# --- real detections ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vtest_detections(detector) -> list[list[Detection]]:
    """The detector's output (score >= 0.5) on every frame of vtest.avi, 795 frames."""
    cap = cv2.VideoCapture(str(VTEST))
    out = []
    flt = DetectFilter(threshold=0.5)
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.append(detector.run(img, flt, bgr=True).detections)
    cap.release()
    assert len(out) == 795
    return out


PETS_WALKERS = 19  # people who cross vtest.avi (PETS 2009 S2L1, view 1), as its MOTChallenge ground truth counts them


@pytest.mark.slow
@pytest.mark.parametrize("step", [1, 2], ids=["10fps", "5fps"])
def test_vtest_people_make_one_event_each(vtest_detections, step) -> None:
    """Every frame, and every second frame: at most 1.5 person events per walker (the target of
    scripts/count_events.py, which also runs the mirrored clip and checks against the ground truth)."""
    frames = vtest_detections[::step]
    per_frame = [sum(d.label == "person" for d in f) for f in frames]
    mean_people = sum(per_frame) / len(per_frame)
    assert 3 <= mean_people <= 8  # "about 5 people a frame"
    tr = Tracker(TrackerConfig(frozenset({"person"})))
    events: list[TrackEvent] = []
    live = []
    for i, dets in enumerate(frames):
        new = tr.update(dets, i * step / FPS, i * step)
        events += new
        # counts equal the events started and not yet ended
        started = sum(e.kind == "start" for e in events)
        ended = sum(e.kind == "end" for e in events)
        assert sum(tr.counts().values()) == started - ended
        live.append(started - ended)
    events += tr.flush()
    starts = {e.seq: e for e in events if e.kind == "start"}
    ends = {e.seq: e for e in events if e.kind == "end"}
    assert sorted(starts) == list(range(1, len(starts) + 1))  # ids 1..N, unique, in start order
    assert starts.keys() == ends.keys()  # each event ends exactly once
    assert len(ends) == sum(e.kind == "end" for e in events)
    for seq, s in starts.items():
        e = ends[seq]
        assert s.frame < e.frame and s.start_t <= s.last_t <= e.end_t
        assert e.frames >= 3 and e.label == "person"
    n = len(starts)
    assert PETS_WALKERS * 0.8 <= n <= PETS_WALKERS * 1.5, n
    mean_live = sum(live) / len(live)
    assert 0.7 * mean_people <= mean_live <= 1.8 * mean_people, (mean_live, mean_people)
    updates = sum(e.kind == "update" for e in events)
    assert len(events) < 0.5 * len(frames)  # events, not a message per frame
    print(f"\nvtest.avi, every {step} frame(s): {n} person events started, {updates} updates, "
          f"{mean_people:.2f} people/frame detected, {mean_live:.2f} live tracks/frame")


@pytest.mark.slow
def test_vtest_all_labels(vtest_detections) -> None:
    tr = Tracker(TrackerConfig(frozenset()))
    for i, dets in enumerate(vtest_detections):
        tr.update(dets, i / FPS, i)
    tr.flush()
    assert tr.started == tr.ended
    assert PETS_WALKERS * 0.8 <= tr.started["person"] <= PETS_WALKERS * 1.5
    assert set(tr.started) <= {d.label for f in vtest_detections for d in f}
    print(f"\nvtest.avi, every label: {dict(tr.started)}")
