"""Detections for `edgedetect eval`, made as the daemon makes them.

Each picture is read and decoded once, reduced as the daemon's image source reduces a still
(sources/decode.py: a 12 MP photo is never whole in memory), and dropped before the next. It then
goes through every model by `Model.run`: the daemon's own fit into the input (letterbox and
all), interpreter and decoding, loaded as `edgedetect bench` loads it, at a low score threshold.
Invoke times are the daemon's own per-frame figure (`StageTimes.invoke_ms`) after bench's warm-up,
at the daemon's thread count and, on the same pictures, at one thread.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgedetect.bench.measure import WARMUP_FRAMES, percentiles
from edgedetect.config import ModelConfig
from edgedetect.detect.catalogue import Catalogue
from edgedetect.detect.metadata import model_labels
from edgedetect.detect.model import DetectFilter, Model
from edgedetect.detect.resolve import ModelFiles, load_configured, resolve_model
from edgedetect.detect.runtime import read_model_file
from edgedetect.errors import UserError
from edgedetect.evaluate.dataset import Sample
from edgedetect.sources.decode import MAX_SIDE, BadImage, decode, probe
from edgedetect.sources.images import MAX_FILE_BYTES

log = logging.getLogger("edgedetect.evaluate")

MAX_DETECTIONS = 100  # COCO's: the scores count at most 100 detections a picture


@dataclass
class Candidate:
    """One model under evaluation and what it found."""

    name: str
    files: ModelFiles
    model: Model  # at `threads` interpreter threads, the daemon's
    threads: int
    single: Model | None  # the same file at one thread (None: `threads` is one)
    results: list[dict] = field(default_factory=list)  # image_id, label, score, bbox in pixels
    invoke_ms: list[float] = field(default_factory=list)
    invoke_ms_single: list[float] = field(default_factory=list)

    def describe(self) -> dict:
        w, h = self.model.input_size
        ms = percentiles(self.invoke_ms, (50,))["p50"] if self.invoke_ms else None  # None: stopped before any
        single = percentiles(self.invoke_ms_single, (50,))["p50"] if self.single and self.invoke_ms_single else ms
        return {"model": self.name, "path": str(self.files.model), "family": self.model.family,
                "size_mb": round(self.files.model.stat().st_size / 1e6, 2),
                "input": f"{w}x{h} {self.model.input.dtype}", "threads": self.threads,
                "invoke_ms": {"1": single, str(self.threads): ms}}

    def detect(self, image: np.ndarray, sample: Sample, size: tuple[int, int], flt: DetectFilter) -> None:
        if not self.invoke_ms:
            for m in (self.model, self.single):
                if m is not None:  # the first invokes set up XNNPACK's threads and caches
                    m.run(image, flt)
                    for _ in range(WARMUP_FRAMES - 1):
                        m.invoke()
        found = self.model.run(image, flt)
        self.invoke_ms.append(found.times.invoke_ms)
        if self.single is not None:
            self.invoke_ms_single.append(self.single.run(image, flt).times.invoke_ms)
        w, h = size
        for d in found.detections:
            x0, y0, x1, y1 = d.box
            # Rounded here, so the saved results are exactly the ones scored.
            self.results.append({"image_id": sample.image_id, "label": d.label, "score": round(d.score, 6),
                                 "bbox": [round(x0 * w, 3), round(y0 * h, 3), round((x1 - x0) * w, 3),
                                          round((y1 - y0) * h, 3)]})


def load(spec: str, base: ModelConfig, catalogue: Catalogue, labels: str, threads: int) -> Candidate:
    """A catalogue name or .tflite file, as the daemon would load it; `labels` for a model that
    has no labels of its own (catalogue, beside the file, or embedded)."""
    mc = dataclasses.replace(base, path=spec, labels="")
    files = resolve_model(mc, catalogue)
    if labels and files.labels is None and model_labels(read_model_file(files.model), files.model) is None:
        files = dataclasses.replace(files, labels=Path(labels))
    model = load_configured(mc, files, threads)
    if model.kind != "detector":
        raise UserError(f"--model {spec}: a {model.kind}; eval scores detectors (boxes), not classes of a whole picture")
    single = load_configured(mc, files, 1) if threads > 1 else None
    return Candidate(files.name, files, model, threads, single)


def read_image(sample: Sample) -> tuple[np.ndarray, tuple[int, int]]:
    """The picture, decoded as the daemon decodes a still, and the size its labels are in."""
    path = sample.image
    if path.stat().st_size > MAX_FILE_BYTES:
        raise BadImage(f"file over {MAX_FILE_BYTES // 2**20} MB")
    data = path.read_bytes()
    image = decode(data, MAX_SIDE)
    _, width, height, _ = probe(data) or ("", image.shape[1], image.shape[0], False)  # decode read it already
    return image, sample.size or (width, height)


@dataclass
class Outcome:
    done: list[tuple[Sample, tuple[int, int]]]  # pictures every model has seen, with their label size
    unreadable: int = 0
    stopped: bool = False


def run(candidates: list[Candidate], samples: list[Sample], flt: DetectFilter, stop: threading.Event,
        progress: Callable[[int, int], None] = lambda done, total: None) -> Outcome:
    out = Outcome([])
    progress(0, len(samples))
    for n, sample in enumerate(samples, start=1):
        if stop.is_set():
            out.stopped = True
            break
        try:
            image, size = read_image(sample)
        except (BadImage, OSError) as e:
            log.error("%s: cannot read the picture (%s); left out", sample.image, getattr(e, "strerror", None) or e)
            out.unreadable += 1
        else:
            for c in candidates:
                c.detect(image, sample, size, flt)
            out.done.append((sample, size))
            del image  # one picture in memory at a time
        progress(n, len(samples))
    return out


def eval_filter(min_score: float, iou: float) -> DetectFilter:
    """The daemon's filter, with every class kept, down to `min_score`, at most COCO's 100 a picture."""
    return DetectFilter(threshold=min_score, max_detections=MAX_DETECTIONS, iou=iou)
