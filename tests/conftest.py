"""Shared fixtures: the real models and media in ../shared, and the daemon run as a process."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MODELS = SHARED / "models"
MEDIA = SHARED / "media"
DETECTOR = MODELS / "ssd_mobilenet_v2_coco_quant_postprocess.tflite"
COCO_LABELS = MODELS / "coco_labels.txt"
CLASSIFIER = MODELS / "mobilenet_v2_1.0_224_quant.tflite"
IMAGENET_LABELS = MODELS / "imagenet_labels.txt"
VTEST = MEDIA / "vtest.avi"

# The catalogue finds files in these mirrors; nothing is downloaded at test time.
os.environ.setdefault("EDGEDETECT_MODELS_DIR", f"{MODELS}:{MEDIA}")


def iou(a, b) -> float:
    """Overlap of two (x0, y0, x1, y1) boxes, written plainly, independent of the package's own."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def pytest_configure(config: pytest.Config) -> None:
    if not DETECTOR.is_file():
        raise pytest.UsageError(f"{DETECTOR} missing: the tests need ../shared (see ../shared/README.md)")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read or write the user's real model cache."""
    monkeypatch.setenv("EDGEDETECT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A command run in-process (cli.main) installs a root handler on the stderr pytest captured
    for that test, and may set logger levels; both are put back, so that a later test's threads
    neither write to a closed stream nor lose their INFO lines."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: lg.level for name, lg in logging.Logger.manager.loggerDict.items()
              if isinstance(lg, logging.Logger) and name.startswith("edgedetect")}
    yield
    for h in list(root.handlers):  # pytest's own capture handlers come and go with each phase
        if h not in handlers and not type(h).__module__.startswith("_pytest"):
            root.removeHandler(h)
    root.setLevel(level)
    for name, lg in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(lg, logging.Logger) and name.startswith("edgedetect"):
            lg.setLevel(levels.get(name, logging.NOTSET))


@pytest.fixture(scope="session")
def detector():
    from edgedetect.detect.families import load_model

    return load_model(DETECTOR, COCO_LABELS, threads=2)


@pytest.fixture(scope="session")
def classifier():
    from edgedetect.detect.families import load_model

    return load_model(CLASSIFIER, IMAGENET_LABELS, threads=2)


def worker_on_one_camera(model, flt, motion=None, max_failures: int = 10):
    """The inference thread serving one camera whose frames the test puts into its slot by hand
    (the camera's capture thread is never started): (worker, camera, detector figures)."""
    from edgedetect.config import ONE_CAMERA
    from edgedetect.pipeline.camera import Camera, CameraSpec
    from edgedetect.pipeline.scheduler import Scheduler
    from edgedetect.pipeline.stats import DetectorStats
    from edgedetect.pipeline.worker import InferenceWorker

    def no_source():
        raise AssertionError("the test feeds the slot itself")

    scheduler = Scheduler()
    detector = DetectorStats()
    cam = Camera(CameraSpec(ONE_CAMERA, no_source, motion=motion), scheduler.arrived, detector.banner)
    scheduler.add(cam)
    worker = InferenceWorker(model, scheduler, detector, flt, max_failures=max_failures)
    return worker, cam, detector
