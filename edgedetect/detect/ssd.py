"""Detectors that end in the TFLite_Detection_PostProcess op (SSD and friends): the runtime has
already decoded and suppressed; outputs are boxes, classes, scores and a count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgedetect.detect.labels import has_background, label_for
from edgedetect.detect.model import DetectFilter, Findings, Loaded, Model
from edgedetect.detect.preprocess import Fit
from edgedetect.detect.tensors import OutputBuffers, TensorInfo
from edgedetect.detect.tflite_file import postprocess_options
from edgedetect.errors import ModelError
from edgedetect.frames import Detection


@dataclass(frozen=True, slots=True)
class SsdOutputs:
    boxes: int
    classes: int
    scores: int
    count: int


class SsdDetector(Model):
    """boxes [1,N,4], classes [1,N], scores [1,N], count [1] (TFLite_Detection_PostProcess)"""

    kind = "detector"
    family = "ssd"

    def __init__(self, loaded: Loaded, layout: SsdOutputs, num_classes: int | None = None, **kw: Any):
        super().__init__(loaded, layout, **kw)
        self.num_classes = num_classes
        self._label_offset = 1 if has_background(self.labels) else 0
        if self.labels and num_classes:
            covered = max(self.labels) + 1 - self._label_offset
            if covered < num_classes:
                raise ModelError(
                    f"{loaded.labels_path}: ids up to {covered - 1} for a detector with {num_classes} classes "
                    f"(expected labels for class ids 0..{num_classes - 1})"
                )
        by_index = {t.index: t for t in self.outputs}
        order = (layout.count, layout.scores, layout.boxes, layout.classes)
        self._buffers = OutputBuffers(self.interp, [by_index[i] for i in order])

    @classmethod
    def file_options(cls, loaded: Loaded) -> dict[str, Any]:
        num_classes = (postprocess_options(loaded.content) or {}).get("num_classes")
        return {"num_classes": int(num_classes) if num_classes else None}

    @classmethod
    def recognise(cls, outputs: list[TensorInfo]) -> SsdOutputs | None:
        """Find boxes/classes/scores/count by name and shape. TF1 exports name them `...PostProcess`,
        `:1`, `:2`, `:3`; TF2 exports name them by signature keys (`detection_boxes` ...) or
        `StatefulPartitionedCall:N` in another order, so position alone is never trusted."""
        if len(outputs) != 4:
            return None
        boxes = [t for t in outputs if len(t.shape) == 3 and t.shape[-1] == 4]
        count = [t for t in outputs if int(np.prod(t.shape)) == 1]
        pairs = [t for t in outputs if len(t.shape) == 2 and t not in boxes]
        if len(boxes) != 1 or len(count) != 1 or len(pairs) != 2:
            return None
        n = boxes[0].shape[1]
        if any(t.shape[1] != n for t in pairs):
            return None

        def pick(words: tuple[str, ...], suffix: str) -> list[TensorInfo]:
            by_word = [t for t in pairs if any(w in t.name.lower() for w in words)]
            if len(by_word) == 1:
                return by_word
            return [t for t in pairs if "postprocess" in t.name.lower() and t.name.endswith(suffix)]

        classes, scores = pick(("class",), ":1"), pick(("score",), ":2")
        if len(classes) != 1 or len(scores) != 1 or classes[0] is scores[0]:
            return None
        return SsdOutputs(boxes[0].index, classes[0].index, scores[0].index, count[0].index)

    def decode(self, fit: Fit, flt: DetectFilter, top_k: int = 3) -> Findings:
        count_a, scores_a, boxes_a, classes_a = self._buffers.read()
        count = int(count_a.reshape(-1)[0])
        scores = scores_a[0][:count]
        keep = np.flatnonzero(scores >= flt.threshold)
        if keep.size == 0:
            return Findings()
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        # (ymin, xmin, ymax, xmax) -> (xmin, ymin, xmax, ymax), then back to frame coordinates.
        boxes = fit.to_frame(boxes_a[0][keep][:, [1, 0, 3, 2]])
        classes = classes_a[0]
        found: list[Detection] = []
        for box, i in zip(boxes.tolist(), keep):
            class_id = int(classes[i])
            label = label_for(self.labels, class_id + self._label_offset)
            if not flt.keeps(label):
                continue
            found.append(Detection(class_id, label, float(scores[i]), tuple(box)))
            if len(found) >= flt.max_detections:
                break
        return Findings(detections=tuple(found))
