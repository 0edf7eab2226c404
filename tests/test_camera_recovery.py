"""The Pi camera recovering in-process, through picamera2's contract (tests/fake_picamera2.py):
a frontend timeout is noticed within the stall timeout, the same camera object is restarted
first, a new one is opened only after the old one is closed, a capture hung past the stall
timeout does not keep the camera busy, and twenty recoveries leak no camera object."""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import threading
import time
from typing import Callable, Iterator

import pytest

from edgedetect import clock
from edgedetect.config import ONE_CAMERA
from edgedetect.pipeline import capture
from edgedetect.pipeline.builder import Pipeline, PipelineOptions
from edgedetect.pipeline.camera import CameraSpec
from edgedetect.pipeline.state import SourceState
from edgedetect.sinks.metrics import MetricsExtension
from edgedetect.sinks.viewer import Request
from edgedetect.sources.picam import BUFFER_COUNT, PiCamera
from fake_picamera2 import Rig

SUPERVISE_S = 0.05  # the daemon's tick calls check_source_stall every 0.25 s; faster here


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until cond() held; fails the test after timeout."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(0.005)
    return time.monotonic() - t0


@contextlib.contextmanager
def camera_pipeline(detector, rig: Rig, stall_timeout: float, capture_timeout: float) -> Iterator[Pipeline]:
    """A pipeline on the fake camera, supervised as the daemon does it."""

    def make_source() -> PiCamera:
        return PiCamera(160, 120, 100.0, lores=None, camera_factory=rig.factory, capture_timeout=capture_timeout)

    p = Pipeline(detector, [CameraSpec(ONE_CAMERA, make_source)],
                 PipelineOptions(stall_timeout=stall_timeout, stats_interval=3600))
    stop = threading.Event()

    def supervise() -> None:
        while not stop.wait(SUPERVISE_S):
            p.check_source_stall()

    p.start()
    sup = threading.Thread(target=supervise, name="test-supervisor", daemon=True)
    sup.start()
    try:
        yield p
    finally:
        stop.set()
        sup.join(2)
        p.stop()
        p.join(3)
        rig.teardown()


def frames(p: Pipeline) -> int:
    return p.camera().stats.camera.total


def flowing(p: Pipeline, n: int = 10, timeout: float = 10.0) -> None:
    start = frames(p)
    wait_for(lambda: frames(p) >= start + n, timeout, f"{n} more frames")


def test_frontend_timeout_restarts_the_same_camera(detector, caplog):
    rig = Rig()
    with caplog.at_level(logging.INFO), camera_pipeline(detector, rig, stall_timeout=3.0, capture_timeout=0.3) as p:
        flowing(p, 20)
        cam = p.camera().capture._source.camera
        assert cam.camera_config["buffer_count"] == BUFFER_COUNT == 3 and cam.camera_config["queue"] is False
        rig.frontend_timeout(cleared_by="restart")
        noticed = wait_for(lambda: p.camera().stats.camera_restarts >= 1, 5, "a camera restart")
        flowing(p, 20)
        snap = p.snapshot()
    assert noticed <= 3.0  # within stall_timeout (capture_timeout 0.3 s + a stop/start)
    assert snap["camera_restarts"] == 1 and snap["camera_reopens"] == 0
    assert rig.made == 1  # the same object: no new Picamera2
    names = rig.names()
    fault = names.index("fault:restart#0")
    assert names[fault + 1:fault + 3] == ["stop#1", "start#1"], names
    assert rig.blocked_stops == 0 and rig.lost_buffers == 0 and rig.unreleased == 0
    assert any("no frame for 0.3 s" in r.getMessage() and "restarting the camera" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


def test_camera_still_stuck_after_restart_is_closed_then_reopened(detector, monkeypatch):
    monkeypatch.setattr(capture, "BACKOFF_START_S", 0.05)
    rig = Rig()
    with camera_pipeline(detector, rig, stall_timeout=3.0, capture_timeout=0.3) as p:
        flowing(p, 20)
        rig.frontend_timeout(cleared_by="reopen")
        noticed = wait_for(lambda: p.camera().stats.camera_restarts >= 1, 5, "a camera restart")
        wait_for(lambda: p.camera().stats.camera_reopens >= 1, 5, "a new camera object")
        flowing(p, 20)
        assert p.camera().stats.source_state is SourceState.RUNNING
        snap = p.snapshot()
    assert noticed <= 3.0
    assert snap["camera_restarts"] == 2 and snap["camera_reopens"] == 1
    names = rig.names()
    fault = names.index("fault:reopen#0")
    # the cheap cure first, on the same object; then closed; only then a new object
    assert names[fault + 1:fault + 6] == ["stop#1", "start#1", "stop#1", "close#1", "open#2"], names
    assert "busy#2" not in names and rig.leaked_fds == []
    assert rig.blocked_stops == 0 and rig.lost_buffers == 0


def test_capture_hung_past_stall_timeout_is_cancelled_so_the_reopen_succeeds(detector):
    """A capture waiting longer than the pipeline's patience: the stall check abandons its thread.
    The blocked capture must be cancelled, so that its thread closes the camera and the new
    thread's Picamera2 can acquire it (a second object for a held camera fails to open)."""
    rig = Rig()
    with camera_pipeline(detector, rig, stall_timeout=1.0, capture_timeout=60.0) as p:
        flowing(p, 20)
        old = p.camera().capture
        t0 = time.monotonic()
        rig.frontend_timeout(cleared_by="reopen")
        wait_for(lambda: p.camera().capture is not old, 5, "the stall check to replace the capture thread")
        noticed = time.monotonic() - t0
        wait_for(lambda: p.camera().stats.camera_reopens >= 1, 5, "a new camera object")
        flowing(p, 20)
        assert not old._thread.is_alive()  # not left blocked in capture_request for ever
        assert p.camera().stats.source_state is SourceState.RUNNING
    assert noticed <= 1.0 + 2 * SUPERVISE_S + 0.3
    names = rig.names()
    assert names.index("close#1") < names.index("open#2"), names
    assert "busy#2" not in names and rig.leaked_fds == [] and rig.made == 2
    assert rig.blocked_stops == 0


def test_shutdown_during_a_hung_capture_closes_the_camera(detector):
    rig = Rig()
    with camera_pipeline(detector, rig, stall_timeout=600.0, capture_timeout=60.0) as p:
        flowing(p, 10)
        rig.frontend_timeout(cleared_by="never")
        time.sleep(0.3)  # the capture thread is now blocked waiting for a frame
        cap = p.camera().capture
        t0 = time.monotonic()
        p.stop()
        cap.join(2)
        took = time.monotonic() - t0
        assert not cap._thread.is_alive() and took < 1.0
    assert rig.holder is None and rig.names()[-1] == "close#1"
    assert rig.blocked_stops == 0 and rig.atexit == []


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _threads(prefix: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive())


@pytest.mark.slow
def test_twenty_recoveries_leak_no_camera(detector, monkeypatch):
    """Each round: frames stop until a new object opens the camera, so the daemon restarts the
    same object, then closes it and opens a new one. After 20 rounds exactly one camera object
    is alive, with one notify pipe, one event loop and one capture thread."""
    monkeypatch.setattr(capture, "BACKOFF_START_S", 0.05)
    # Log as the daemon does, formatting each record and keeping none: pytest's capture keeps
    # them, and a record's SourceError holds its traceback's frames, and the camera in them.
    text = io.StringIO()
    logger = logging.getLogger("edgedetect")
    handler = logging.StreamHandler(text)
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(handler)
    try:
        _twenty_recoveries(detector)
    finally:
        logger.removeHandler(handler)
    # The camera says each restart; the capture thread says the identical reopen failure once
    # (frames never flow long between rounds, so the 20 are one run of failures).
    assert text.getvalue().count("; restarting the camera\n") == 20
    assert text.getvalue().count("; reopening it; retrying in") == 1


def _twenty_recoveries(detector) -> None:
    rig = Rig()
    with camera_pipeline(detector, rig, stall_timeout=3.0, capture_timeout=0.15) as p:
        flowing(p, 10)
        gc.collect()
        fds_before = _fds()
        for i in range(1, 21):
            rig.frontend_timeout(cleared_by="reopen")
            wait_for(lambda: p.camera().stats.camera_reopens >= i, 5, f"reopen {i}")
            flowing(p, 5)
        gc.collect()
        live = list(rig.live)
        assert len(live) == 1 and live[0].is_open and live[0].serial == 21
        assert rig.atexit == [live[0].close]  # closed objects are no longer pinned by atexit
        assert _fds() == fds_before  # the old pipes closed, the new one in their place
        assert _threads("fake-picam-loop") == 1 and _threads("capture") == 1
        snap = p.snapshot()
        del live
    assert snap["camera_restarts"] == 40 and snap["camera_reopens"] == 20
    assert rig.made == 21 and "busy" not in {e for e, _ in rig.events}
    assert rig.leaked_fds == [] and rig.blocked_stops == 0 and rig.lost_buffers == 0 and rig.unreleased == 0
    gc.collect()
    assert len(rig.live) == 0  # the last one is closed at shutdown and let go


def test_restarts_in_metrics():
    from prometheus_client.parser import text_string_to_metric_families

    ext = MetricsExtension(lambda: {"source_state": "running", "camera_restarts": 3, "camera_reopens": 1}, "pi")
    body = ext.route(Request("GET", "/metrics", {})).body.decode()
    got = {s.name: s.value for fam in text_string_to_metric_families(body) for s in fam.samples}
    assert got["edgedetect_camera_restarts_total"] == 3 and got["edgedetect_camera_reopens_total"] == 1
