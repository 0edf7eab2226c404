"""The hot path without waste: JPEGs only for viewers and at most one per result, buffers made
once, preprocessing and gating without per-frame allocations."""

from __future__ import annotations

import threading
import tracemalloc

import cv2
import numpy as np
from conftest import VTEST

from edgedetect.config import ONE_CAMERA, MotionConfig
from edgedetect.detect.model import DetectFilter
from edgedetect.frames import Frame, Result
from edgedetect.pipeline.builder import Pipeline, PipelineOptions
from edgedetect.pipeline.camera import CameraSpec
from edgedetect.pipeline.motion import MotionGate
from edgedetect.pipeline.publish import Publisher
from edgedetect.sources.video import VideoFile


def vtest_frame(index: int = 0) -> np.ndarray:
    cap = cv2.VideoCapture(str(VTEST))
    for _ in range(index + 1):
        ok, img = cap.read()
        assert ok
    cap.release()
    return img


def run_pipeline(detector, viewers: int, results: int) -> tuple[Publisher, int, list[int]]:
    """The daemon's pipeline on vtest (unpaced) with `viewers` threads doing what the stream does."""
    src = VideoFile(VTEST, pace=False, loop=True)
    src.open()
    p = Pipeline(detector, [CameraSpec(ONE_CAMERA, lambda: VideoFile(VTEST, pace=False, loop=True), src)],
                 PipelineOptions(report_sinks=()))
    pub = p.camera().publisher
    published = threading.Semaphore(0)
    p.add_result_listener(lambda r: published.release())
    stop = threading.Event()
    got = [0] * viewers

    def viewer(k: int) -> None:
        for jpg in pub.stream(stop, poll_s=0.2):  # what each HTTP viewer's thread does
            assert jpg[:2] == b"\xff\xd8"
            got[k] += 1

    threads = [threading.Thread(target=viewer, args=(k,)) for k in range(viewers)]
    for t in threads:
        t.start()
    p.start()
    try:
        for _ in range(results):
            assert published.acquire(timeout=10)
    finally:
        p.stop()
        stop.set()
        p.join(3)
        for t in threads:
            t.join(3)
    return pub, p.camera().stats.published.total, got


def test_no_viewer_no_jpeg(detector):
    pub, published, _ = run_pipeline(detector, viewers=0, results=25)
    assert published >= 25
    assert pub.encoded == 0


def test_one_jpeg_per_result_however_many_viewers(detector):
    pub, published, got = run_pipeline(detector, viewers=3, results=40)
    assert all(n > 0 for n in got)
    # Each viewer may skip results it was too slow for, but no result is encoded twice.
    assert 0 < pub.encoded <= published
    # Viewers asking for the same result at the same moment share one encoding.
    before = pub.encoded
    pub.publish(Result(Frame(10_000, 0.0, vtest_frame())))
    barrier = threading.Barrier(3)
    jpegs: list[bytes] = []

    def ask() -> None:
        barrier.wait()
        jpegs.append(pub.jpeg()[1])

    askers = [threading.Thread(target=ask) for _ in range(3)]
    for t in askers:
        t.start()
    for t in askers:
        t.join(5)
    assert len(jpegs) == 3 and len(set(jpegs)) == 1 and pub.encoded == before + 1


def test_preprocessing_writes_into_the_input_tensor(detector):
    img = vtest_frame()
    frame = Frame(0, 0.0, img)
    tensor = detector.interp.tensor(detector.input.index)
    before = tensor().ctypes.data
    detector.prepare(frame)  # warm
    tracemalloc.start()
    try:
        for _ in range(20):
            detector.prepare(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A resized copy would be 300*300*3 = 270 kB; only small Python objects may appear.
    assert peak < 32_000, peak
    assert tensor().ctypes.data == before
    # And what is in the tensor is the frame, resized and in RGB order.
    want = cv2.cvtColor(cv2.resize(img, (300, 300), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(tensor()[0], want)


def test_outputs_read_into_buffers_made_once(detector):
    frame = Frame(0, 0.0, vtest_frame())
    flt = DetectFilter(threshold=0.3)
    first = detector.detect(frame, flt).detections
    arrays = [id(a) for a in detector._buffers.arrays]
    tracemalloc.start()
    try:
        for _ in range(20):
            again = detector.detect(frame, flt).detections
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert again == first and first
    assert [id(a) for a in detector._buffers.arrays] == arrays
    assert peak < 32_000, peak


def test_motion_thumbnail_allocates_nothing_per_frame():
    a, b = vtest_frame(0), vtest_frame(30)
    gate = MotionGate(MotionConfig())
    gate.should_infer(Frame(0, 0.0, a), 0.0)
    gate.inferred(0.0)
    tracemalloc.start()
    try:
        for i in range(50):
            gate.should_infer(Frame(i, 0.1, b if i % 2 else a), 0.1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16_000, peak
