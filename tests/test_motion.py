"""Motion gating: still scenes are not inferred (except the forced ones), motion is inferred at
once, and skipped frames are published with the last detections held."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import VTEST, worker_on_one_camera
from edgedetect.config import MotionConfig
from edgedetect.detect.model import DetectFilter
from edgedetect.frames import Frame, Result
from edgedetect.pipeline.motion import MotionGate, motion_enabled
from edgedetect.sources.video import VideoFile


def vtest_frames(*indices: int) -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(VTEST))
    out, i = {}, 0
    while len(out) < len(indices):
        ok, img = cap.read()
        assert ok, "vtest.avi ended early"
        if i in indices:
            out[i] = img
        i += 1
    cap.release()
    return out


@pytest.fixture(scope="module")
def still_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real video file: vtest's first frame repeated, written and decoded like any other clip."""
    img = vtest_frames(0)[0]
    path = tmp_path_factory.mktemp("still") / "still.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, img.shape[1::-1])
    assert w.isOpened()
    for _ in range(40):
        w.write(img)
    w.release()
    return path


def read_all(path: Path) -> list[np.ndarray]:
    src = VideoFile(path, pace=False)
    src.open()
    frames = []
    while (cap := src.read()) is not None:
        frames.append(cap.image)
    src.close()
    return frames


def noisy(img: np.ndarray, rng: np.random.Generator, sigma: float = 4.0) -> np.ndarray:
    """Sensor-like noise, which must not count as motion."""
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def test_motion_enabled_auto_follows_live_sources():
    class Cam:
        live = True

    class File:
        live = False

    assert motion_enabled(MotionConfig(enabled="auto"), Cam())
    assert not motion_enabled(MotionConfig(enabled="auto"), File())
    assert motion_enabled(MotionConfig(enabled="on"), File())
    assert not motion_enabled(MotionConfig(enabled="off"), Cam())


def test_gate_skips_still_clip_except_forced(still_clip: Path):
    frames = read_all(still_clip)
    assert len(frames) == 40
    rng = np.random.default_rng(1)
    gate = MotionGate(MotionConfig(force_interval=1.0))
    decisions = []
    for i, img in enumerate(frames):
        t = i * 0.1  # the clip's own 10 fps
        infer = gate.should_infer(Frame(i, t, noisy(img, rng)), t)
        if infer:
            gate.inferred(t)
        decisions.append(infer)
    inferred_at = [i for i, d in enumerate(decisions) if d]
    # The first frame, then one forced inference a second (every 10th frame), nothing else.
    assert inferred_at == [0, 10, 20, 30]
    c = gate.counters
    assert (c.motion, c.forced, c.skipped, c.checked) == (1, 3, 36, 40)
    assert gate.figures()["skipped"] == 36 and not gate.figures()["moving"]


def test_gate_infers_the_frame_with_motion():
    f = vtest_frames(0, 1, 30)
    gate = MotionGate(MotionConfig(force_interval=60.0))
    assert gate.should_infer(Frame(0, 0.0, f[0]), 0.0)
    gate.inferred(0.0)
    assert not gate.should_infer(Frame(1, 0.1, f[0].copy()), 0.1)
    # Three seconds later people have walked on: that very frame is inferred.
    assert gate.should_infer(Frame(30, 0.2, f[30]), 0.2)
    assert gate.counters.fraction > gate.threshold and gate.moving
    # Not yet inferred (say inference failed): the reference is unchanged, so motion still shows.
    assert gate.should_infer(Frame(31, 0.3, f[30]), 0.3)
    gate.inferred(0.3)
    assert not gate.should_infer(Frame(32, 0.4, f[30].copy()), 0.4)


def test_gate_uses_lores_when_the_camera_gives_one():
    f = vtest_frames(0, 30)
    small = {i: cv2.cvtColor(cv2.resize(img, (320, 240)), cv2.COLOR_BGR2RGB) for i, img in f.items()}
    gate = MotionGate(MotionConfig(force_interval=60.0))
    assert gate.should_infer(Frame(0, 0.0, f[0], small[0]), 0.0)
    gate.inferred(0.0)
    assert gate.thumbnail(Frame(0, 0.0, f[0], small[0])).shape == (72, 96)
    assert not gate.should_infer(Frame(1, 0.1, f[0], small[0].copy()), 0.1)
    assert gate.should_infer(Frame(2, 0.2, f[30], small[30]), 0.2)


class Collector:
    def __init__(self) -> None:
        self.results: list[Result] = []
        self.cond = threading.Condition()

    def __call__(self, r: Result) -> None:
        with self.cond:
            self.results.append(r)
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 10.0) -> Result:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.results) >= n, timeout), f"only {len(self.results)} results"
            return self.results[n - 1]


def test_worker_holds_detections_on_still_frames_and_infers_motion(detector, still_clip: Path):
    still = read_all(still_clip)
    moving = vtest_frames(30)[30]
    out = Collector()
    gate = MotionGate(MotionConfig(force_interval=60.0))
    worker, cam, _ = worker_on_one_camera(detector, DetectFilter(threshold=0.4), motion=gate)
    slot, stats = cam.slot, cam.stats
    cam.publisher.add_listener(out)
    worker.start()
    try:
        n = 0
        for i, img in enumerate(still[:6]):
            slot.put(Frame(i, 0.0, img))
            n += 1
            r = out.wait(n)
            assert r.frame.index == i  # every frame is shown, skipped or not
        first = out.results[0]
        assert first.inference_ms > 0 and first.detections, "vtest's first frame has people in it"
        for r in out.results[1:]:
            assert r.inference_ms == 0.0  # held, not inferred
            assert r.detections == first.detections
        slot.put(Frame(100, 0.0, moving))
        r = out.wait(n + 1)
        assert r.frame.index == 100 and r.inference_ms > 0
        assert r.detections != first.detections
        snap = stats.figures(time.monotonic())
        assert snap["frames_inferred"] == 2 and snap["frames_skipped"] == 5
        assert gate.figures()["skipped"] == 5 and gate.figures()["motion"] == 2
    finally:
        worker.stop()
        slot.close()
        worker.join(2)
    assert not worker._thread.is_alive()


def test_worker_forces_inference_on_a_still_scene(detector, still_clip: Path):
    img = read_all(still_clip)[0]
    out = Collector()
    gate = MotionGate(MotionConfig(force_interval=0.3))
    worker, cam, _ = worker_on_one_camera(detector, DetectFilter(), motion=gate)
    slot = cam.slot
    cam.publisher.add_listener(out)
    worker.start()
    try:
        slot.put(Frame(0, 0.0, img))
        out.wait(1)
        slot.put(Frame(1, 0.0, img))
        assert out.wait(2).inference_ms == 0.0
        threading.Event().wait(0.35)
        slot.put(Frame(2, 0.0, img))
        assert out.wait(3).inference_ms > 0  # forced after force_interval
        assert gate.figures()["forced"] == 1
    finally:
        worker.stop()
        slot.close()
        worker.join(2)
