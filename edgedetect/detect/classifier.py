"""Image classifiers: one [1, classes] output; the top classes are reported."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgedetect.detect.labels import label_for
from edgedetect.detect.model import DetectFilter, Findings, Loaded, Model
from edgedetect.detect.preprocess import Fit
from edgedetect.detect.tensors import OutputBuffers, TensorInfo
from edgedetect.errors import ModelError
from edgedetect.frames import Classification


class Classifier(Model):
    """one output [1, classes]"""

    kind = "classifier"
    family = "classifier"

    def __init__(self, loaded: Loaded, layout: TensorInfo, **kw: Any):
        n = int(np.prod(layout.shape))
        if not loaded.labels:
            loaded = Loaded(loaded.path, loaded.content, loaded.interp, loaded.inputs, loaded.outputs,
                            {i: f"class {i}" for i in range(n)}, None)
        super().__init__(loaded, layout, **kw)
        self.output = layout
        self._buffers = OutputBuffers(self.interp, [self.output])
        if len(self.labels) == n:
            self._label_offset = 0
        elif len(self.labels) == n - 1:
            self._label_offset = -1  # the file left out the background class 0
        else:
            raise ModelError(
                f"{loaded.labels_path}: {len(self.labels)} labels for a classifier with {n} classes "
                f"(expected {n}, or {n - 1} without a background line)"
            )

    @classmethod
    def recognise(cls, outputs: list[TensorInfo]) -> TensorInfo | None:
        if len(outputs) == 1 and len(outputs[0].shape) == 2 and outputs[0].shape[0] == 1:
            return outputs[0]
        return None

    def _top(self, k: int, threshold: float) -> list[Classification]:
        raw = self._buffers.read()[0].reshape(-1)
        if self.output.quantized:
            scores = (raw.astype(np.float32) - self.output.zero_point) * self.output.scale
        else:
            scores = raw.astype(np.float32)
        k = min(k, scores.size)
        idx = np.argpartition(-scores, k - 1)[:k]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        out = []
        for i in idx:
            if scores[i] < threshold:
                break
            j = int(i) + self._label_offset
            label = label_for(self.labels, j) if j >= 0 else "background"
            out.append(Classification(int(i), label, float(scores[i])))
        return out

    def decode(self, fit: Fit, flt: DetectFilter, top_k: int = 3) -> Findings:
        return Findings(classes=tuple(self._top(top_k, flt.threshold if flt.threshold < 1 else 0.0)))
