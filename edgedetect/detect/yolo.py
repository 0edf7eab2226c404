"""YOLO detectors as Ultralytics and the YOLOv5 repository export them to TFLite.

Three output layouts, one tensor each:
- YOLOv5: [1, N, 5 + C]: centre x, centre y, width, height, objectness, C class scores;
  score = objectness x class score;
- YOLOv8 / YOLO11: [1, 4 + C, N] (or its transpose [1, N, 4 + C]): box, then C class scores, no
  objectness;
- exported with NMS: [1, K, 6]: x1, y1, x2, y2, score, class, already suppressed.

N is the number of anchors, 21 x (H/32) x (W/32) for strides 8, 16, 32 (three times that for
YOLOv5's three anchors a cell): 8,400 for YOLOv8 at 640x640, 25,200 for YOLOv5. Boxes are
normalised to the input (Ultralytics' TFLite exports) or in input pixels (some other exporters);
which one is read from the model's metadata or the quantization range, else from the values.
Inputs are RGB scaled to 0..1, letterboxed with grey 114 as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from edgedetect.detect.labels import has_background, label_for
from edgedetect.detect.metadata import appended_zip, ultralytics_metadata
from edgedetect.detect.model import DetectFilter, Findings, Loaded, Model
from edgedetect.detect.nms import Quant, cap, nms, xywh_to_xyxy
from edgedetect.detect.preprocess import Fit
from edgedetect.detect.tensors import TensorInfo
from edgedetect.errors import ModelError
from edgedetect.frames import Detection

PIXEL_BOXES_ABOVE = 2.0  # normalised box values never exceed ~1.1; input pixels of a real box do


@dataclass(frozen=True, slots=True)
class YoloLayout:
    tensor: TensorInfo
    classes: int | None  # None for NMS exports (the shape does not say)
    boxes: int  # anchors (N), or the K rows of an NMS export
    channels_first: bool = False  # [1, values, N] rather than [1, N, values]


@dataclass(frozen=True, slots=True)
class Candidates:
    """Boxes over the threshold: x1, y1, x2, y2 in the output's units, score, class."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    @classmethod
    def empty(cls) -> "Candidates":
        return cls(np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.intp))


def anchor_count(n: int, anchors_per_cell: int) -> bool:
    """n is 21 x (cells of stride 32) x anchors (strides 8/16/32) or 85 x ... (P6 models, 8..64)."""
    return n % (21 * anchors_per_cell) == 0 or n % (85 * anchors_per_cell) == 0


def _single_3d(outputs: list[TensorInfo]) -> TensorInfo | None:
    if len(outputs) == 1 and len(outputs[0].shape) == 3 and outputs[0].shape[0] == 1:
        return outputs[0]
    return None


class YoloBase(Model):
    kind = "detector"
    input_range = (0.0, 1.0)
    letterbox = True
    suppress: ClassVar[bool] = True  # NMS exports come already suppressed

    def __init__(self, loaded: Loaded, layout: YoloLayout, normalised: bool | None = None,
                 metadata_classes: int | None = None, **kw: Any):
        super().__init__(loaded, layout, **kw)
        self.quant = Quant.of(layout.tensor)
        classes = layout.classes
        if classes is not None and metadata_classes is not None and metadata_classes != classes:
            raise ModelError(
                f"{loaded.path}: the output {layout.tensor.describe()} read as {self.family} has {classes} "
                f"classes, but the model's metadata names {metadata_classes}; set [model] family to the "
                "model's own (yolov5: [1, N, 5 + classes], yolov8: [1, 4 + classes, N])")
        self.num_classes = classes if classes is not None else metadata_classes
        self._label_offset = self._check_labels(loaded)
        if normalised is None and self.quant.quantized and self.quant.max_real <= PIXEL_BOXES_ABOVE:
            normalised = True  # the output cannot even hold pixel coordinates
        self.normalised = normalised  # None: decided on each frame from the values
        self._tensor: Callable[[], np.ndarray] = self.interp.tensor(layout.tensor.index)
        w, h = self.input_size
        self._pixels_to_unit = np.array([1.0 / w, 1.0 / h, 1.0 / w, 1.0 / h], np.float32)
        self._raw_thresholds: dict[float, Any] = {}

    def _check_labels(self, loaded: Loaded) -> int:
        """The offset of class 0 in the labels (1 when the file starts with a background line)."""
        n, labels = self.num_classes, self.labels
        if not labels or n is None:
            return 0
        ids = sorted(labels)
        if ids == list(range(n)):
            return 0
        if has_background(labels) and ids == list(range(n + 1)):
            return 1
        raise ModelError(
            f"{loaded.labels_path}: {len(labels)} labels (ids {ids[0]}..{ids[-1]}) for a model with {n} "
            f"classes (expected {n} labels for class ids 0..{n - 1}, one a line)")

    @classmethod
    def file_options(cls, loaded: Loaded) -> dict[str, Any]:
        found = ultralytics_metadata(appended_zip(loaded.content))
        if found is None:
            return {}
        meta, member = found
        task = str(meta.get("task", "detect"))
        if task != "detect":
            raise ModelError(f"{loaded.path}: an Ultralytics {task} model ({member} says task: {task}); "
                             "only detection models (task: detect) are supported")
        names = meta.get("names")
        # Ultralytics' TFLite exports normalise boxes to the input size.
        return {"normalised": True, "metadata_classes": len(names) if isinstance(names, (dict, list)) else None}

    def label(self, class_id: int) -> str:
        return label_for(self.labels, class_id + self._label_offset)

    def raw_threshold(self, threshold: float, max_factor: float = 1.0) -> Any:
        """The raw value a score must reach (cached per threshold); see nms.Quant.raw_at_least."""
        key = threshold / max_factor
        if key not in self._raw_thresholds:
            self._raw_thresholds[key] = self.quant.raw_at_least(key)
        return self._raw_thresholds[key]

    def candidates(self, threshold: float) -> Candidates:
        """The last invoke's boxes scoring `threshold` or more."""
        view = self._tensor()
        try:
            return self._extract(view[0], threshold)
        finally:
            del view  # the runtime refuses to invoke while a view of its buffers is alive

    def _extract(self, out: np.ndarray, threshold: float) -> Candidates:
        raise NotImplementedError

    def to_unit(self, boxes: np.ndarray) -> np.ndarray:
        """x1, y1, x2, y2 in the output's units -> normalised to the input tensor (in place)."""
        normalised = self.normalised
        if normalised is None:
            normalised = boxes.size == 0 or float(np.abs(boxes).max()) <= PIXEL_BOXES_ABOVE
        if not normalised:
            boxes *= self._pixels_to_unit
        return boxes

    def decode(self, fit: Fit, flt: DetectFilter, top_k: int = 3) -> Findings:
        c = self.candidates(flt.threshold)
        if c.scores.size == 0:
            return Findings()
        if flt.allow or flt.deny:
            present = np.unique(c.classes)
            dropped = [k for k in present.tolist() if not flt.keeps(self.label(k))]
            if dropped:
                keep = ~np.isin(c.classes, dropped)
                c = Candidates(c.boxes[keep], c.scores[keep], c.classes[keep])
        if self.suppress:
            order = nms(c.boxes, c.scores, c.classes, flt.iou, flt.max_detections)
        else:
            order = np.argsort(-c.scores, kind="stable")[:flt.max_detections]
        boxes = fit.to_frame(self.to_unit(c.boxes[order]))
        return Findings(detections=tuple(
            Detection(int(k), self.label(int(k)), float(s), tuple(b))
            for b, s, k in zip(boxes.tolist(), c.scores[order].tolist(), c.classes[order].tolist())))


class YoloV8(YoloBase):
    """one output [1, 4 + classes, N] or [1, N, 4 + classes] (YOLOv8, YOLO11: box, class scores)"""

    family = "yolov8"

    @classmethod
    def recognise(cls, outputs: list[TensorInfo]) -> YoloLayout | None:
        t = _single_3d(outputs)
        if t is None:
            return None
        a, b = t.shape[1], t.shape[2]
        if b > a >= 5:
            return YoloLayout(t, a - 4, b, channels_first=True)
        if a > b >= 5:
            return YoloLayout(t, b - 4, a, channels_first=False)
        return None

    def _extract(self, out: np.ndarray, threshold: float) -> Candidates:
        q = self.raw_threshold(threshold)
        if q is None:
            return Candidates.empty()
        # [4 + C, N] is reduced along axis 0 as it lies: max() over a transposed view measured
        # about 30% slower on 84 x 8400.
        axis = 0 if self.layout.channels_first else 1
        box_part, class_part = np.split(out, [4], axis=axis)
        best = class_part.max(axis=axis)
        idx = np.flatnonzero(best >= q)
        if idx.size == 0:
            return Candidates.empty()
        if (kept := cap(best[idx])) is not None:
            idx = idx[kept]
        classes = class_part.take(idx, axis=1 - axis).argmax(axis=axis)
        raw_boxes = box_part.take(idx, axis=1 - axis)
        if axis == 0:
            raw_boxes = raw_boxes.T
        return Candidates(xywh_to_xyxy(self.quant.real(raw_boxes)), self.quant.real(best[idx]), classes)


class YoloV5(YoloBase):
    """one output [1, N, 5 + classes] (YOLOv5: box, objectness, class scores)"""

    family = "yolov5"

    @classmethod
    def recognise(cls, outputs: list[TensorInfo]) -> YoloLayout | None:
        t = _single_3d(outputs)
        if t is None:
            return None
        n, d = t.shape[1], t.shape[2]
        if n > d >= 6 and anchor_count(n, 3):
            return YoloLayout(t, d - 5, n)
        return None

    def _extract(self, out: np.ndarray, threshold: float) -> Candidates:
        # score = objectness x class score, and a class score is at most the largest value the
        # output holds (1 for sigmoid floats): objectness below threshold / that can never pass.
        # (A hair lower, so that float rounding of the product never loses a candidate.)
        top = self.quant.max_real if self.quant.quantized else 1.0
        q = self.raw_threshold(threshold, max(top, 1e-6) * (1 + 1e-6))
        if q is None:
            return Candidates.empty()
        idx = np.flatnonzero(out[:, 4] >= q)
        if idx.size == 0:
            return Candidates.empty()
        rows = self.quant.real(out[idx])
        scores = rows[:, 5:] * rows[:, 4:5]
        classes = scores.argmax(axis=1)
        best = scores[np.arange(idx.size), classes]
        keep = np.flatnonzero(best >= np.float32(threshold))
        if (kept := cap(best[keep])) is not None:
            keep = keep[kept]
        return Candidates(xywh_to_xyxy(rows[keep, :4]), best[keep], classes[keep])


class YoloNms(YoloBase):
    """one output [1, K, 6] (exported with NMS: x1, y1, x2, y2, score, class)"""

    family = "yolo-nms"
    suppress = False

    @classmethod
    def recognise(cls, outputs: list[TensorInfo]) -> YoloLayout | None:
        t = _single_3d(outputs)
        if t is None:
            return None
        k, d = t.shape[1], t.shape[2]
        # A one-class YOLOv5 is [1, N, 6] too, with N a multiple of its anchor grid (6,300 at
        # 320x320); NMS exports keep max_det rows (300 by default).
        if d == 6 and k >= 1 and not anchor_count(k, 3):
            return YoloLayout(t, None, k)
        return None

    def _extract(self, out: np.ndarray, threshold: float) -> Candidates:
        q = self.raw_threshold(threshold)
        if q is None:
            return Candidates.empty()
        idx = np.flatnonzero(out[:, 4] >= q)
        if idx.size == 0:
            return Candidates.empty()
        rows = self.quant.real(out[idx])
        return Candidates(rows[:, :4], rows[:, 4], np.rint(rows[:, 5]).astype(np.intp))
