"""The pipeline's stages in-process: newest frame wins, drops are counted, stats add up."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
from conftest import VTEST

from edgedetect.config import ONE_CAMERA
from edgedetect.detect.model import DetectFilter
from edgedetect.frames import Detection, Frame, Result
from edgedetect.pipeline.builder import Pipeline, PipelineOptions
from edgedetect.pipeline.camera import CameraSpec
from edgedetect.pipeline.publish import Publisher
from edgedetect.pipeline.slot import LatestSlot
from edgedetect.pipeline.stats import CameraStats, RateMeter, log_line
from edgedetect.sources.video import VideoFile


def test_slot_newest_wins_and_counts_drops():
    slot: LatestSlot[int] = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.take(0) == 4 and slot.dropped == 4
    assert slot.take(0.01) is None
    slot.put(5)
    assert slot.take(0) == 5 and slot.dropped == 4


def test_slot_close_wakes_taker():
    slot: LatestSlot[int] = LatestSlot()
    got = []
    t = threading.Thread(target=lambda: got.append(slot.take(10)))
    t.start()
    time.sleep(0.05)
    slot.close()
    t.join(1)
    assert not t.is_alive() and got == [None]


def test_rate_meter():
    m = RateMeter(window_s=5)
    for i in range(51):
        m.tick(100 + i * 0.1)
    assert abs(m.rate(105.0) - 10.0) < 0.01
    assert m.rate(200.0) == 0.0


class LiveVideo(VideoFile):
    """vtest decoded flat out and flagged live: frames come whether or not anyone takes them,
    like a camera's, only faster than the detector."""

    live = True


# The session's detector is shared by the tests: a worker still inside an invoke when its test
# ends would use it beside the next test's (emulated aarch64 takes 1.5-3 s an invoke).
JOIN_S = 30.0


def run_pipeline(detector, source_cls, enough: int = 795) -> tuple[dict, list[Result]]:
    """Run until the clip ends or `enough` results are in (emulated aarch64 infers ~1 frame/s)."""
    src = source_cls(VTEST, pace=False)
    src.open()
    p = Pipeline(detector, [CameraSpec(ONE_CAMERA, lambda: source_cls(VTEST, pace=False), src)],
                 PipelineOptions(DetectFilter(threshold=0.5), report_sinks=()))
    seen: list[Result] = []
    p.add_result_listener(seen.append)
    p.start()
    deadline = time.monotonic() + 90
    while p.camera().stats.source_state != "ended" and len(seen) < enough and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    p.stop()
    p.join(JOIN_S)
    return p.snapshot(), seen


def test_two_pipelines_share_no_state(detector, classifier):
    """Two pipelines in one process (several cameras): each has its own slot, figures and results."""
    srcs = [VideoFile(VTEST, pace=False), VideoFile(VTEST, pace=False)]
    for s in srcs:
        s.open()
    a = Pipeline(detector, [CameraSpec(ONE_CAMERA, lambda: VideoFile(VTEST, pace=False), srcs[0])],
                 PipelineOptions(report_sinks=()))
    b = Pipeline(classifier, [CameraSpec(ONE_CAMERA, lambda: VideoFile(VTEST, pace=False), srcs[1])],
                 PipelineOptions(report_sinks=()))
    got: dict[str, list[Result]] = {"a": [], "b": []}
    a.add_result_listener(got["a"].append)
    b.add_result_listener(got["b"].append)
    a.start(), b.start()
    deadline = time.monotonic() + 60
    while min(len(got["a"]), len(got["b"])) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    a.stop(), b.stop()
    a.join(JOIN_S), b.join(JOIN_S)
    assert not a.worker._thread.is_alive() and not b.worker._thread.is_alive()
    assert len(got["a"]) >= 10 and len(got["b"]) >= 10
    assert all(r.classes == () for r in got["a"]) and all(r.detections == () for r in got["b"])
    sa, sb = a.snapshot(), b.snapshot()
    assert sa["frames_published"] == len(got["a"]) and sb["frames_published"] == len(got["b"])
    assert a.camera().slot is not b.camera().slot
    assert a.camera().publisher.latest()[1] is not b.camera().publisher.latest()[1]


def test_live_source_faster_than_detector_drops_never_queues(detector):
    snap, seen = run_pipeline(detector, LiveVideo)
    assert snap["source_state"] == "ended" and snap["frames_captured"] == 795
    assert snap["dropped_frames"] > 100  # decoding outruns inference: the newest frame wins
    # every captured frame was either inferred or dropped (the last may still be in the slot)
    assert snap["frames_inferred"] + snap["dropped_frames"] in (795, 794)
    assert snap["frames_published"] == snap["frames_inferred"] == len(seen)
    indices = [r.frame.index for r in seen]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)


def test_unpaced_file_is_pulled_frame_by_frame(detector):
    """A file has no clock: unpaced, it is decoded as fast as the detector takes frames, and
    every frame is inferred, none dropped."""
    snap, seen = run_pipeline(detector, VideoFile, enough=40)
    # at most the one frame decoded ahead is not inferred yet; none dropped, none skipped
    assert snap["dropped_frames"] == 0 and len(seen) >= 40
    assert 0 <= snap["frames_captured"] - snap["frames_inferred"] <= 1
    assert [r.frame.index for r in seen] == list(range(len(seen)))
    persons = [sum(d.label == "person" for d in r.detections) for r in seen]
    assert np.mean(persons) >= 2  # about five people walk through every frame
    assert snap["inference_ms"]["p50"] > 0 and snap["latency_ms"]["p50"] >= snap["inference_ms"]["p50"] * 0.5


def test_publisher_encodes_once_per_result_lazily():
    stats = CameraStats()
    pub = Publisher(stats)
    img = np.zeros((120, 160, 3), np.uint8)
    result = Result(Frame(0, 0.0, img), [Detection(0, "person", 0.9, (0.1, 0.1, 0.5, 0.9))])
    pub.publish(result)
    assert pub.encoded == 0  # nobody asked: nothing drawn or encoded
    a = pub.jpeg()
    b = pub.jpeg()
    assert a == b and pub.encoded == 1 and a[1][:2] == b"\xff\xd8"
    drawn = cv2.imdecode(np.frombuffer(a[1], np.uint8), cv2.IMREAD_COLOR)
    assert drawn[12, 40:80].max() > 100  # box drawn in the JPEG (top edge at y=0.1*120)
    assert not img.any() and not result.frame.image.flags.writeable  # never on the frame itself
    pub.publish(Result(Frame(1, 0.0, img.copy())))
    pub.jpeg()
    assert pub.encoded == 2


def test_placeholder_shown_while_source_away():
    pub = Publisher(CameraStats())
    pub.publish_placeholder("no signal: reconnecting", (320, 240))
    seq, jpg = pub.jpeg()
    assert seq == 1 and jpg[:2] == b"\xff\xd8" and pub.placeholder


def test_log_line_is_flat_key_values():
    line = log_line({"camera_fps": 9.9, "inference_ms": {"p50": 5.0, "p95": 7.5}, "source": "demo",
                     "throttled_flags": ["under_voltage"]})
    assert line == "camera_fps=9.9 inference_ms_p50=5.0 inference_ms_p95=7.5 source=demo throttled_flags=under_voltage"
