"""The pipeline's stages in-process: newest frame wins, drops are counted, stats add up."""

from __future__ import annotations

import logging
import threading
import time

import cv2
import numpy as np
import pytest
from conftest import VTEST

from edgedetect.config import ONE_CAMERA
from edgedetect.detect.model import DetectFilter
from edgedetect.frames import Detection, Frame, Result
from edgedetect.pipeline.builder import Pipeline, PipelineOptions
from edgedetect.pipeline.camera import CameraSpec
from edgedetect.pipeline.publish import Publisher
from edgedetect.pipeline.slot import LatestSlot
from edgedetect.pipeline.report import LogSink
from edgedetect.pipeline.stats import CameraStats, RateMeter
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
    # The scene's clock is the file's: its frame rate (10 fps) from the first frame on, however
    # fast the detector took them; live sources and paced files have t_media None.
    t0 = seen[0].frame.t_capture
    assert [r.frame.t_scene - t0 for r in seen] == pytest.approx([i / 10.0 for i in range(len(seen))])
    live_snap, live_seen = run_pipeline(detector, LiveVideo, enough=5)
    assert all(r.frame.t_media is None and r.frame.t_scene == r.frame.t_capture for r in live_seen)


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


def test_log_line_is_a_short_summary_with_only_changed_counters(caplog):
    """The figures of a daemon with recording on (41 fields): the line says the rates, times,
    CPU, memory and temperature, then only the counters that changed; the journal fields keep
    every figure."""
    snap = {"uptime_s": 30.1, "source": "demo", "source_state": "running", "model": "ssd-mobilenet-v2-coco",
            "camera_fps": 9.9, "inference_fps": 9.9, "published_fps": 9.9, "skipped_fps": 0.0,
            "frames_captured": 300, "frames_inferred": 300, "frames_published": 300, "frames_skipped": 0,
            "frames_corrupt": 0, "dropped_frames": 0, "inference_errors": 0, "camera_restarts": 0,
            "camera_reopens": 0, "inference_ms": {"mean": 42.8, "p50": 41.96, "p95": 51.94},
            "latency_ms": {"mean": 45.3, "p50": 44.56, "p95": 54.69}, "cpu_percent": {"process": 43.8, "system": 73.0},
            "rss_mb": 112.4, "temperature_c": 52.6, "throttled": "0x0", "throttled_flags": [], "viewers": 0,
            "record": {"paused": False, "reason": None, "pauses": 0, "free_mb": 78806.4, "events_stored": 7,
                       "events_skipped": 0, "write_errors": 0, "mb_written": 1.12, "deleted": 0,
                       "clips_written": 0, "clips_failed": 0, "encode_ms_mean": 8.3, "frames_dropped": 0,
                       "preroll_kb": 251.6, "open_clips": 7}}
    sink = LogSink()
    later = {**snap, "frames_captured": 400, "dropped_frames": 3, "viewers": 1,
             "record": {**snap["record"], "paused": True, "reason": "disk full", "free_mb": 200.0}}
    with caplog.at_level(logging.INFO, logger="edgedetect.pipeline.stats"):
        sink(snap)
        sink(later)
        sink(later)
    first, second, third = [r.getMessage() for r in caplog.records]
    assert first == ("9.9 fps, inference 42 ms (p95 52), latency 45 ms, cpu 44% (system 73%), 112 MB, 52.6 C; "
                     "record_events_stored=7 (+7), record_open_clips=7 (+7)")
    assert second == ("9.9 fps, inference 42 ms (p95 52), latency 45 ms, cpu 44% (system 73%), 112 MB, 52.6 C; "
                      "dropped_frames=3 (+3), viewers=1 (+1), record_paused=yes, record_reason=disk full")
    assert third == "9.9 fps, inference 42 ms (p95 52), latency 45 ms, cpu 44% (system 73%), 112 MB, 52.6 C"
    assert len(third) <= 100 and len(first) <= 160 and "False" not in first + second  # 546 characters before
    assert caplog.records[0].snapshot is snap  # the journal fields: every figure


def test_cpu_figure_absent_until_measured():
    """The first /api/stats after start has no CPU figure yet: absent, not 0.0 that reads as idle."""
    from edgedetect.pipeline.stats import DetectorStats

    det = DetectorStats()
    assert "cpu_percent" not in det.host(det.started, False)
    time.sleep(0.05)  # the system's CPU clock moves on
    assert set(det.host(det.started + 1.0, False)["cpu_percent"]) == {"process", "system"}
